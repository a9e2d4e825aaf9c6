#!/usr/bin/env python3
"""Regenerates fuzz/corpus/fuzz_tls_listener/ (checked in; run by hand): real ClientHellos
from Python's ssl over memory BIOs (TLS 1.3 and 1.2, with and without SNI/ALPN), a few
records cut short, and non-TLS bytes a confused client sends (HTTP, SSLv2-style hello)."""
import os
import ssl

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_tls_listener")
# fuzz_tls_hello (the tls_inspector's parser) gets hellos shaped differently from the above:
# split over records, many ALPN protocols, a long name
OUT_HELLO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_tls_hello")


def hello(sni=None, alpn=None, maxv=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if maxv:
        ctx.maximum_version = maxv
    if alpn:
        ctx.set_alpn_protocols(alpn)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        s.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {
        "ch13_sni_alpn": hello("fuzz.test", ["h2", "http/1.1"]),
        "ch13_plain": hello(),
        "ch12_sni": hello("fuzz.test", None, ssl.TLSVersion.TLSv1_2),
        "ch12_alpn_unknown": hello(None, ["spdy/1"], ssl.TLSVersion.TLSv1_2),
        "http_request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "sslv2_hello": bytes.fromhex("802e0103010015000000100100800300800700c0060040020080"
                                     "04008000003900003800003500003300003200000a"),
    }
    ch = seeds["ch13_sni_alpn"]
    seeds["ch13_cut"] = ch[: len(ch) // 2]
    seeds["alert_after_hello"] = ch + bytes.fromhex("15030300020228")
    seeds["appdata_before_hello"] = bytes.fromhex("1703030005") + b"hello" + ch
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    os.makedirs(OUT_HELLO, exist_ok=True)
    many = hello("many.example.com", ["p%d" % i for i in range(12)] + ["x" * 40])
    body = many[5:]
    cut = len(body) // 3
    hellos = {
        "ch13_two_records": many[:3] + len(body[:cut]).to_bytes(2, "big") + body[:cut]
        + many[:3] + len(body[cut:]).to_bytes(2, "big") + body[cut:],
        "ch13_alpn_many": many,
        "ch12_long_sni": hello("a" * 60 + "." + "b" * 60 + ".example.com", ["h2"], ssl.TLSVersion.TLSv1_2),
    }
    for name, data in hellos.items():
        with open(os.path.join(OUT_HELLO, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
