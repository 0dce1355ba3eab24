#!/usr/bin/env python3
"""Functions of agent/src longer than a limit (issue 14: 100 lines), KNF
layout as clang-format writes it: the name at the start of a line, the body
between a "{" and a "}" in column 0.  Exit 1 when one is found."""
import glob
import re
import sys

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 100
found = 0
for path in sorted(glob.glob("agent/src/*.c")):
    lines = open(path).read().split("\n")
    name, start = None, None
    for i, line in enumerate(lines):
        m = re.match(r"([A-Za-z_]\w*)\(", line)
        if m and start is None:
            name = m.group(1)
        if line == "{" and name:
            start = i
        elif line.startswith("}") and start is not None:
            n = i - start - 1
            if n > LIMIT:
                print("%s: %s: %d lines" % (path, name, n))
                found += 1
            start, name = None, None
sys.exit(1 if found else 0)
