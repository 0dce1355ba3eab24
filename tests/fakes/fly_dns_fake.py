#!/usr/bin/env python3
"""A fake of Fly's internal DNS server (fdaa::3) for pylon-agent's tests
(python3 stdlib only).

Answers TXT and AAAA questions, class IN, over UDP and TCP on the same
loopback port, from a table the test changes at run time:

  all.vms.<app>.internal          TXT  "<id> <region>,<id> <region>,..."
                                       (every machine of the app, any group,
                                       any state but destroyed)
  <group>.process.<app>.internal  AAAA the started machines of the group
  vms.<app>.internal              TXT  the started machines' "<id> <region>"

set_machines(app, [(id, region, group, started), ...]) fills those names;
set_record(name, type, values) sets one name directly.  Unknown names are
NXDOMAIN.  Long TXT values are split in 255-byte character-strings.

Faults (fake.fault, changeable at run time): "drop" (no reply), "delay"
(fake.delay seconds, then the answer), "servfail", "refused", "truncate"
(TC over UDP: the answer only over TCP), "wrong_id", "garbage", and
"udp_limit" (TC when the UDP answer is over 512 bytes, like a server
that ignores EDNS0).  Every question is logged in fake.queries as
dict(time, proto, name, type).

In-process: fake = FlyDnsFake().start(); fake.addr ("127.0.0.1:PORT");
fake.stop()
"""
import socket
import struct
import threading
import time

T_AAAA, T_TXT = 28, 16
TYPES = {"AAAA": T_AAAA, "TXT": T_TXT}


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _read_qname(msg, off):
    labels = []
    while True:
        if off >= len(msg):
            raise ValueError("short name")
        n = msg[off]
        if n == 0:
            return ".".join(labels), off + 1
        if n & 0xC0:
            raise ValueError("compression in a question")
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n


class FlyDnsFake:
    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.lock = threading.Lock()
        self.records = {}       # (name, type) -> [values]
        self.fault = None
        self.delay = 0.0
        self.queries = []
        self._stop = threading.Event()
        self._threads = []

    # ---- the table -----------------------------------------------------
    def set_record(self, name, rtype, values):
        with self.lock:
            self.records[(name.lower().rstrip("."), rtype)] = list(values)

    def set_machines(self, app, machines):
        """machines: (id, region, group, started) tuples."""
        allv = ",".join("%s %s" % (m[0], m[1]) for m in machines)
        started = [m for m in machines if m[3]]
        groups = {}
        for i, m in enumerate(machines):
            groups.setdefault(m[2], [])
            if m[3]:
                groups[m[2]].append("fdaa:0:18:a7b:%x::%x" % (i + 1, i + 2))
        with self.lock:
            for key in [k for k in self.records if k[0].endswith(".%s.internal" % app)]:
                del self.records[key]
            self.records[("all.vms.%s.internal" % app, "TXT")] = [allv] if machines else []
            self.records[("vms.%s.internal" % app, "TXT")] = (
                [",".join("%s %s" % (m[0], m[1]) for m in started)] if started else [])
            for g, addrs in groups.items():
                if addrs:
                    self.records[("%s.process.%s.internal" % (g, app), "AAAA")] = addrs

    def count(self, name=None, rtype=None):
        with self.lock:
            return sum(1 for q in self.queries
                       if (name is None or q["name"] == name) and
                       (rtype is None or q["type"] == rtype))

    # ---- the wire ------------------------------------------------------
    def _answer(self, msg, proto):
        if len(msg) < 12:
            return None
        qid, flags, qd = struct.unpack("!HHH", msg[:6])
        if qd != 1:
            return None
        name, off = _read_qname(msg, 12)
        qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
        question = msg[12:off + 4]
        tname = {T_AAAA: "AAAA", T_TXT: "TXT"}.get(qtype, str(qtype))
        with self.lock:
            self.queries.append(dict(time=time.monotonic(), proto=proto,
                                     name=name.lower(), type=tname))
            fault, delay = self.fault, self.delay
            values = self.records.get((name.lower(), tname))
        if fault == "drop":
            return None
        if fault == "delay":
            time.sleep(delay)
        if fault == "garbage":
            return b"\x00\x01garbage"
        rid = (qid ^ 0x5555) if fault == "wrong_id" else qid
        rcode = 0
        if fault == "servfail":
            rcode = 2
        elif fault == "refused":
            rcode = 5
        elif values is None:
            rcode = 3
        answers = b""
        count = 0
        if rcode == 0:
            for v in values:
                if tname == "AAAA":
                    rdata = socket.inet_pton(socket.AF_INET6, v)
                else:
                    raw = v.encode()
                    rdata = b"".join(bytes([len(raw[i:i + 255])]) + raw[i:i + 255]
                                     for i in range(0, max(len(raw), 1), 255))
                answers += struct.pack("!HHHIH", 0xC00C, qtype, qclass, 5,
                                       len(rdata)) + rdata
                count += 1
        tc = False
        if proto == "udp" and (fault == "truncate" or
                               (fault == "udp_limit" and 12 + len(question) + len(answers) > 512)):
            tc, answers, count = True, b"", 0
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode | (0x0200 if tc else 0)
        return struct.pack("!HHHHHH", rid, rflags, 1, count, 0, 0) + question + answers

    def _udp_loop(self):
        while not self._stop.is_set():
            try:
                msg, peer = self.udp.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                out = self._answer(msg, "udp")
            except (ValueError, struct.error):
                out = None
            if out is not None:
                try:
                    self.udp.sendto(out, peer)
                except OSError:
                    pass

    def _tcp_one(self, conn):
        try:
            conn.settimeout(5)
            hdr = conn.recv(2, socket.MSG_WAITALL)
            if len(hdr) < 2:
                return
            n = struct.unpack("!H", hdr)[0]
            msg = conn.recv(n, socket.MSG_WAITALL)
            out = self._answer(msg, "tcp")
            if out is not None:
                conn.sendall(struct.pack("!H", len(out)) + out)
        except (OSError, ValueError, struct.error):
            pass
        finally:
            conn.close()

    def _tcp_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_one, args=(conn,), daemon=True).start()

    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):
            self.udp = socket.socket(fam, socket.SOCK_DGRAM)
            self.udp.bind((self.host, 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(fam, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((self.host, self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        else:
            raise RuntimeError("no free port for UDP and TCP")
        self.tcp.listen(16)
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.addr = ("[%s]:%d" if fam == socket.AF_INET6 else "%s:%d") % (self.host, self.port)
        for fn in (self._udp_loop, self._tcp_loop):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.udp.close()
        self.tcp.close()
