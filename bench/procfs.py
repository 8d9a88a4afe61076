"""A server's process tree, memory and CPU time, read from /proc (Linux), for the bench scripts."""
import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(root):
    """``root`` and every live descendant of it."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_kb(pid):
    """VmRSS of one process in KB (0 once it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(root):
    return sum(rss_kb(pid) for pid in process_tree(root))


def cpu_ticks(pid):
    """utime + stime of one process, in clock ticks; None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5), counted after the name


def tree_cpu_seconds(root):
    """CPU seconds of ``root``'s tree: each live process's own time and that of the children it has reaped.

    Counting every process's reaped children, not only the root's, keeps the time of short-lived
    grandchildren (Postfix's spawn(8) running a policy service per connection) in the total.
    """
    total = 0
    for pid in process_tree(root):
        try:
            with open("/proc/%d/stat" % pid) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLOCK_TICKS
