"""Peak resident memory of this process, on each system that tells it; the bench measures in fresh processes."""
import os
import sys


def peak_kib():
    """This process's peak resident set in KiB, or None on a system where it cannot be read.

    Linux: VmHWM, which (unlike ru_maxrss) a child does not inherit from its parent. macOS: ru_maxrss, in bytes
    there. Windows: PeakWorkingSetSize through the Win32 API. The macOS and Windows routes have not been run.
    """
    if sys.platform.startswith("linux"):
        with open("/proc/self/status", encoding="utf-8") as status:
            return int(next(line for line in status if line.startswith("VmHWM")).split()[1])
    if sys.platform == "darwin":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    if os.name == "nt":
        import ctypes
        from ctypes import wintypes

        class Counters(ctypes.Structure):
            _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD)] + [
                (name, ctypes.c_size_t) for name in ("PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage",
                                                     "QuotaPagedPoolUsage", "QuotaPeakNonPagedPoolUsage",
                                                     "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage")]

        counters = Counters()
        counters.cb = ctypes.sizeof(Counters)
        process = ctypes.windll.kernel32.GetCurrentProcess()
        if ctypes.windll.psapi.GetProcessMemoryInfo(process, ctypes.byref(counters), counters.cb):
            return counters.PeakWorkingSetSize // 1024
    return None
