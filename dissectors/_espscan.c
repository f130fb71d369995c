/*
 * _espscan: the hot loop of multisa's ESP sequence analysis (analyzer/esp_scan.py).
 *
 * Walks pcap / pcapng records (draft-ietf-opsawg-pcap, -pcapng) from a buffered read (never
 * the whole file), skips the link layer (the link types of dissectors/capture.py LINKTYPES,
 * 802.1Q/802.1ad tags), IPv4 / IPv6 and UDP, reads the ESP SPI and Sequence Number
 * (RFC 4303 §2) of plain ESP (protocol 50) and ESP-in-UDP on port 4500 (RFC 3948 §2: not the
 * Non-ESP Marker, not a NAT-keepalive), and keeps per-SA counters keyed (destination, SPI)
 * with the same anti-replay window algorithm as analyzer/esp_seq.py EspSeqTracker.observe
 * (the tests hold both to identical results).
 *
 * Every frame it does not settle itself -- IKE, IP fragments, IPv6 extension headers,
 * snap-length-cut or inconsistent headers, unknown link types -- is handed back to Python
 * unchanged by next_frame(), to go through dissectors.capture.FrameDecoder.
 *
 * Errors mirror dissectors/capture.py: ScanError(reason, frame, offset).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CAPLEN 262144u
#define MAX_BLOCK (16u * 1024u * 1024u)
#define READ_CHUNK (1u << 20)
#define MAX_WINDOW 4096u

static PyObject *ScanError;

/* ------------------------------------------------------------------------------------ */
/* Per-SA state: mirrors analyzer/esp_seq.py EspSeqTracker                              */

typedef struct {
    uint8_t dst[16], src[16];
    uint8_t dlen, slen, encap, esn;
    uint32_t spi;
    uint64_t packets, bytes;
    double first_ts, last_ts;
    uint64_t first_frame, last_frame;
    uint32_t first_seq, last_seq;
    uint64_t top, base, lowest;
    int64_t gaps;
    uint64_t replays, late, reorders, wraps, seq_zero;
    uint64_t f_replay, f_gap, f_reorder, f_wrap;
    uint64_t *bits; /* ring of `ring` bits */
    uint32_t ring;
} Sa;

typedef struct {
    PyObject_HEAD
    FILE *f;
    uint8_t *buf;
    size_t cap, len, pos; /* buffer [pos, len) holds unread file bytes */
    uint64_t fileoff;     /* file offset of buf[0] */
    int eof;
    int format;           /* 1 pcap, 2 pcapng */
    int big;              /* byte order of the current file/section */
    uint32_t linktype;    /* pcap */
    uint64_t units;       /* pcap */
    /* pcapng interfaces of the current section */
    uint32_t *if_link; uint32_t *if_snap; uint64_t *if_units; int64_t *if_off;
    size_t n_if, cap_if;
    uint64_t frame;
    uint32_t window;
    /* SA table: open addressing + creation order */
    Sa **table; size_t tcap, count;
    Sa **order; size_t ocap;
    Sa *last;
    uint32_t *esn; size_t n_esn, cap_esn;
    /* counters */
    uint64_t frames, datagrams, not_ip, other_proto, esp, esp_in_udp, keepalives;
    uint64_t progress_every, next_mark; /* next_frame() returns False at each mark (progress) */
    int started, done;
} Scanner;

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint32_t le32(const uint8_t *p) {
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}
static inline uint16_t rd16(const Scanner *s, const uint8_t *p) {
    return s->big ? be16(p) : (uint16_t)((p[1] << 8) | p[0]);
}
static inline uint32_t rd32(const Scanner *s, const uint8_t *p) { return s->big ? be32(p) : le32(p); }

static void sa_observe(Sa *t, uint32_t window, uint32_t seq, uint64_t length, double ts, uint64_t frame) {
    t->bytes += length;
    t->last_ts = ts; t->last_frame = frame; t->last_seq = seq;
    if (seq == 0) t->seq_zero++;
    uint32_t ring = t->ring;
    if (t->packets == 0) {
        t->packets = 1;
        t->first_ts = ts; t->first_frame = frame; t->first_seq = seq;
        t->top = t->base = t->lowest = seq;
        memset(t->bits, 0, (ring / 64) * sizeof(uint64_t));
        t->bits[(seq % ring) / 64] |= 1ull << (seq % 64);
        return;
    }
    t->packets++;
    uint64_t top = t->top, full;
    if (t->esn) { /* RFC 4303 Appendix A2.2 */
        uint32_t tl = (uint32_t)top, th = (uint32_t)(top >> 32), hi;
        if (tl >= window - 1)
            hi = seq >= tl - window + 1 ? th : th + 1;
        else
            hi = (th && seq >= (uint32_t)(tl - window + 1)) ? th - 1 : th;
        full = ((uint64_t)hi << 32) | seq;
    } else {
        full = (top & 0xFFFFFFFF00000000ull) | seq;
        if (full < top && top - full > 0x80000000ull) {
            full += 0x100000000ull;
            t->wraps++;
            if (!t->f_wrap) t->f_wrap = frame;
        } else if (full > top && full - top > 0x80000000ull && full >= 0x100000000ull) {
            full -= 0x100000000ull; /* a late one from before a wrap */
        }
    }
    if (full > top) {
        uint64_t d = full - top;
        if (d > 1) {
            t->gaps += (int64_t)(d - 1);
            if (!t->f_gap) t->f_gap = frame;
        }
        if (d >= ring) {
            memset(t->bits, 0, (ring / 64) * sizeof(uint64_t));
        } else {
            for (uint64_t n = top + 1; n < full; n++) {
                uint32_t b = (uint32_t)(n % ring);
                t->bits[b / 64] &= ~(1ull << (b % 64));
            }
        }
        uint32_t b = (uint32_t)(full % ring);
        t->bits[b / 64] |= 1ull << (b % 64);
        t->top = full;
        return;
    }
    if (full < t->lowest) t->lowest = full;
    uint64_t off = top - full;
    uint32_t b = (uint32_t)(full % ring);
    if (off >= window) {
        t->reorders++;
        if (!t->f_reorder) t->f_reorder = frame;
    } else if (t->bits[b / 64] >> (b % 64) & 1) {
        t->replays++;
        if (!t->f_replay) t->f_replay = frame;
    } else {
        t->bits[b / 64] |= 1ull << (b % 64);
        t->late++;
        if (full > t->base) t->gaps--;
    }
}

static inline uint64_t sa_hash(const uint8_t *dst, uint8_t dlen, uint32_t spi) {
    uint64_t h = 1469598103934665603ull ^ spi;
    for (uint8_t i = 0; i < dlen; i++) h = (h ^ dst[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static int table_grow(Scanner *s) {
    size_t ncap = s->tcap ? s->tcap * 2 : 64;
    Sa **nt = calloc(ncap, sizeof(Sa *));
    if (!nt) return -1;
    for (size_t i = 0; i < s->tcap; i++) {
        Sa *t = s->table[i];
        if (!t) continue;
        size_t j = sa_hash(t->dst, t->dlen, t->spi) & (ncap - 1);
        while (nt[j]) j = (j + 1) & (ncap - 1);
        nt[j] = t;
    }
    free(s->table);
    s->table = nt; s->tcap = ncap;
    return 0;
}

static Sa *sa_get(Scanner *s, const uint8_t *dst, uint8_t dlen, const uint8_t *src, uint8_t slen,
                  uint32_t spi, int encap) {
    Sa *t = s->last;
    if (t && t->spi == spi && t->dlen == dlen && memcmp(t->dst, dst, dlen) == 0) return t;
    if (s->tcap) {
        size_t j = sa_hash(dst, dlen, spi) & (s->tcap - 1);
        while ((t = s->table[j]) != NULL) {
            if (t->spi == spi && t->dlen == dlen && memcmp(t->dst, dst, dlen) == 0) return s->last = t;
            j = (j + 1) & (s->tcap - 1);
        }
    }
    if ((s->count + 1) * 2 > s->tcap && table_grow(s) < 0) return NULL;
    if (s->count == s->ocap) {
        size_t ncap = s->ocap ? s->ocap * 2 : 64;
        Sa **no = realloc(s->order, ncap * sizeof(Sa *));
        if (!no) return NULL;
        s->order = no; s->ocap = ncap;
    }
    t = calloc(1, sizeof(Sa));
    if (!t) return NULL;
    uint32_t ring = 64;
    while (ring < s->window) ring <<= 1;
    t->ring = ring;
    t->bits = calloc(ring / 64, sizeof(uint64_t));
    if (!t->bits) { free(t); return NULL; }
    memcpy(t->dst, dst, dlen); t->dlen = dlen;
    memcpy(t->src, src, slen); t->slen = slen;
    t->spi = spi; t->encap = (uint8_t)encap;
    for (size_t i = 0; i < s->n_esn; i++)
        if (s->esn[i] == spi) t->esn = 1;
    size_t j = sa_hash(dst, dlen, spi) & (s->tcap - 1);
    while (s->table[j]) j = (j + 1) & (s->tcap - 1);
    s->table[j] = t;
    s->order[s->count++] = t;
    return s->last = t;
}

/* ------------------------------------------------------------------------------------ */
/* Frame decoding: 1 = settled here, 0 = hand back to Python, -1 = memory error          */

#define ETH_IPV4 0x0800
#define ETH_IPV6 0x86DD

static inline int is_vlan(uint32_t et) { return et == 0x8100 || et == 0x88A8 || et == 0x9100; }

static int link_decode(uint32_t linktype, const uint8_t *d, size_t n, uint32_t *et, size_t *off) {
    uint32_t family;
    switch (linktype) {
    case 1: /* Ethernet */
        if (n < 14) return 0;
        *et = be16(d + 12); *off = 14;
        break;
    case 113: /* Linux SLL */
        if (n < 16) return 0;
        *et = be16(d + 14); *off = 16;
        break;
    case 276: /* Linux SLL2 */
        if (n < 20) return 0;
        *et = be16(d); *off = 20;
        break;
    case 12: case 14: case 101: /* raw IP */
        if (n < 1) return 0;
        *et = (d[0] >> 4) == 4 ? ETH_IPV4 : (d[0] >> 4) == 6 ? ETH_IPV6 : 0; *off = 0;
        return 1;
    case 228: *et = ETH_IPV4; *off = 0; return 1;
    case 229: *et = ETH_IPV6; *off = 0; return 1;
    case 0: /* BSD null: host byte order */
        if (n < 4) return 0;
        family = le32(d);
        if (family > 0xFFFF) family = be32(d);
        goto bsd;
    case 108: /* OpenBSD loop: network order */
        if (n < 4) return 0;
        family = be32(d);
    bsd:
        *off = 4;
        *et = family == 2 ? ETH_IPV4 : (family == 23 || family == 24 || family == 28 || family == 30) ? ETH_IPV6 : 0;
        return 1;
    default:
        return 0;
    }
    while (is_vlan(*et)) {
        if (n < *off + 4) return 0;
        *et = be16(d + *off + 2);
        *off += 4;
    }
    return 1;
}

static int track(Scanner *s, const uint8_t *dst, const uint8_t *src, uint8_t alen, const uint8_t *esp,
                 size_t esp_len, double ts, int encap) {
    Sa *t = sa_get(s, dst, alen, src, alen, be32(esp), encap);
    if (!t) return -1;
    sa_observe(t, s->window, be32(esp + 4), esp_len, ts, s->frame);
    s->esp++;
    if (encap) s->esp_in_udp++;
    s->datagrams++;
    return 1;
}

static int transport(Scanner *s, int proto, const uint8_t *d, size_t p, size_t end, const uint8_t *src,
                     const uint8_t *dst, uint8_t alen, double ts) {
    if (proto == 50) {
        if (end - p < 8) return 0;
        return track(s, dst, src, alen, d + p, end - p, ts, 0);
    }
    /* UDP */
    if (end - p < 8) return 0;
    uint16_t sport = be16(d + p), dport = be16(d + p + 2), length = be16(d + p + 4);
    if (length < 8 || p + length > end) return 0;
    if (sport == 500 || dport == 500) {
        if (sport != 4500 && dport != 4500) return 0; /* IKE: Python */
    }
    if (sport != 4500 && dport != 4500) { /* neither IKE nor NAT-T: nothing for multisa */
        s->datagrams++;
        return 1;
    }
    const uint8_t *pl = d + p + 8;
    size_t plen = length - 8;
    if (plen == 1 && pl[0] == 0xFF) {
        s->keepalives++;
        s->datagrams++;
        return 1;
    }
    if (plen >= 4 && pl[0] == 0 && pl[1] == 0 && pl[2] == 0 && pl[3] == 0) return 0; /* Non-ESP Marker: IKE */
    if (plen < 8) return 0;
    return track(s, dst, src, alen, pl, plen, ts, 1);
}

static int decode(Scanner *s, uint32_t linktype, const uint8_t *d, size_t n, double ts) {
    uint32_t et; size_t off;
    if (!link_decode(linktype, d, n, &et, &off)) return 0;
    if (et == ETH_IPV4) {
        if (n - off < 20 || (d[off] >> 4) != 4) return 0;
        size_t ihl = (size_t)(d[off] & 0x0F) * 4;
        size_t total = be16(d + off + 2);
        size_t end = off + total;
        if (ihl < 20 || total < ihl || off + ihl > n) return 0;
        if (end > n) return 0; /* snap length cut it */
        int proto = d[off + 9];
        if (proto == 51) return 0; /* AH (RFC 4302): Python walks it to its next header */
        if (proto != 17 && proto != 50) { s->other_proto++; return 1; }
        if (be16(d + off + 6) & 0x3FFF) return 0; /* fragment */
        return transport(s, proto, d, off + ihl, end, d + off + 12, d + off + 16, 4, ts);
    }
    if (et == ETH_IPV6) {
        if (n - off < 40 || (d[off] >> 4) != 6) return 0;
        size_t plen = be16(d + off + 4);
        int nh = d[off + 6];
        if (plen == 0 && nh == 0) return 0; /* jumbogram */
        size_t end = off + 40 + plen;
        if (end > n) return 0;
        if (nh == 0 || nh == 43 || nh == 44 || nh == 60) return 0; /* extension headers: Python */
        if (nh == 51) return 0; /* AH (RFC 4302): Python walks it to its next header */
        if (nh != 17 && nh != 50) { s->other_proto++; return 1; }
        return transport(s, nh, d, off + 40, end, d + off + 8, d + off + 24, 16, ts);
    }
    s->not_ip++;
    return 1;
}

/* ------------------------------------------------------------------------------------ */
/* Buffered file reading                                                                 */

static void scan_fail(Scanner *s, const char *reason, int with_frame, uint64_t offset) {
    PyObject *args;
    if (with_frame)
        args = Py_BuildValue("(sKK)", reason, (unsigned long long)(s->frame + 1), (unsigned long long)offset);
    else
        args = Py_BuildValue("(sOO)", reason, Py_None, Py_None);
    if (args) {
        PyErr_SetObject(ScanError, args);
        Py_DECREF(args);
    }
    s->done = 1;
}

/* Make at least `need` bytes available at buf+pos; returns how many are (may be fewer at EOF). */
static size_t ensure(Scanner *s, size_t need) {
    if (s->len - s->pos >= need || s->eof) return s->len - s->pos;
    if (s->pos) {
        memmove(s->buf, s->buf + s->pos, s->len - s->pos);
        s->fileoff += s->pos;
        s->len -= s->pos;
        s->pos = 0;
    }
    if (need > s->cap) {
        size_t ncap = need + READ_CHUNK;
        uint8_t *nb = realloc(s->buf, ncap);
        if (!nb) return s->len;
        s->buf = nb; s->cap = ncap;
    }
    while (s->len < need && !s->eof) {
        size_t want = s->cap - s->len;
        size_t got;
        Py_BEGIN_ALLOW_THREADS
        got = fread(s->buf + s->len, 1, want, s->f);
        Py_END_ALLOW_THREADS
        if (got == 0) s->eof = 1;
        s->len += got;
    }
    return s->len - s->pos;
}

static inline uint64_t cur_off(Scanner *s) { return s->fileoff + s->pos; }

static PyObject *leftover(Scanner *s, uint32_t linktype, double ts, const uint8_t *data, size_t n) {
    return Py_BuildValue("(Kdiy#)", (unsigned long long)s->frame, ts, (int)linktype, (const char *)data, (Py_ssize_t)n);
}

static int start(Scanner *s) {
    size_t have = ensure(s, 4);
    if (have < 4) { scan_fail(s, "not a pcap or pcapng file", 0, 0); return -1; }
    const uint8_t *m = s->buf + s->pos;
    uint32_t mb = be32(m);
    if (mb == 0xA1B2C3D4 || mb == 0xD4C3B2A1 || mb == 0xA1B23C4D || mb == 0x4D3CB2A1) {
        s->format = 1;
        s->big = (mb == 0xA1B2C3D4 || mb == 0xA1B23C4D);
        s->units = (mb == 0xA1B2C3D4 || mb == 0xD4C3B2A1) ? 1000000u : 1000000000u;
        have = ensure(s, 24);
        if (have < 24) {
            char msg[80];
            snprintf(msg, sizeof msg, "truncated pcap file header (%zu of 24 bytes)", have);
            s->frame = 0;
            scan_fail(s, msg, 1, 0);
            return -1;
        }
        s->linktype = rd32(s, s->buf + s->pos + 20) & 0x03FFFFFF;
        s->pos += 24;
        return 0;
    }
    if (mb == 0x0A0D0D0A) { s->format = 2; s->big = 0; return 0; }
    scan_fail(s, "not a pcap or pcapng file", 0, 0);
    return -1;
}

/* One pcap record; returns 1 record ready (*data,*n,*ts), 0 EOF, -1 error. */
static int pcap_next(Scanner *s, const uint8_t **data, size_t *n, double *ts, uint32_t *lt) {
    char msg[96];
    size_t have = ensure(s, 16);
    if (have == 0) return 0;
    uint64_t pos = cur_off(s);
    if (have < 16) {
        snprintf(msg, sizeof msg, "truncated record header (%zu of 16 bytes)", have);
        scan_fail(s, msg, 1, pos);
        return -1;
    }
    const uint8_t *h = s->buf + s->pos;
    uint32_t sec = rd32(s, h), frac = rd32(s, h + 4), caplen = rd32(s, h + 8);
    if (caplen > MAX_CAPLEN) {
        snprintf(msg, sizeof msg, "captured length %u exceeds %u (corrupt record)", caplen, MAX_CAPLEN);
        scan_fail(s, msg, 1, pos);
        return -1;
    }
    have = ensure(s, 16 + (size_t)caplen);
    if (have < 16 + (size_t)caplen) {
        snprintf(msg, sizeof msg, "truncated packet data (%zu of %u bytes)", have - 16, caplen);
        scan_fail(s, msg, 1, pos);
        return -1;
    }
    *data = s->buf + s->pos + 16;
    *n = caplen;
    *ts = (double)sec + (double)frac / (double)s->units;
    *lt = s->linktype;
    s->pos += 16 + (size_t)caplen;
    s->frame++;
    s->frames++;
    return 1;
}

static int add_iface(Scanner *s, uint32_t link, uint32_t snap, uint64_t units, int64_t off) {
    if (s->n_if == s->cap_if) {
        size_t nc = s->cap_if ? s->cap_if * 2 : 8;
        uint32_t *a = realloc(s->if_link, nc * sizeof *a);
        if (!a) return -1;
        s->if_link = a;
        uint32_t *b = realloc(s->if_snap, nc * sizeof *b);
        if (!b) return -1;
        s->if_snap = b;
        uint64_t *c = realloc(s->if_units, nc * sizeof *c);
        if (!c) return -1;
        s->if_units = c;
        int64_t *e = realloc(s->if_off, nc * sizeof *e);
        if (!e) return -1;
        s->if_off = e;
        s->cap_if = nc;
    }
    s->if_link[s->n_if] = link; s->if_snap[s->n_if] = snap;
    s->if_units[s->n_if] = units; s->if_off[s->n_if] = off;
    s->n_if++;
    return 0;
}

static uint64_t ipow(uint64_t b, unsigned e) { uint64_t r = 1; while (e--) r *= b; return r; }

/* v / u rounded once to the nearest double (ties to even), as Python's int / int: a long
 * double quotient rounded again to double is off by one ulp for ~1 in 4,400 timestamps.
 * 55+ quotient bits and a sticky bit from a 128-bit division decide the rounding. */
static int bitlen64(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }

static double div_round(uint64_t v, uint64_t u) {
    if (v == 0) return 0.0;
    int s = 55 + bitlen64(u) - bitlen64(v);
    if (s < 0) s = 0;
    unsigned __int128 n = (unsigned __int128)v << s;
    unsigned __int128 q = n / u;
    int sticky = (n % u) != 0;
    int qbits = q >> 64 ? 64 + bitlen64((uint64_t)(q >> 64)) : bitlen64((uint64_t)q);
    int extra = qbits > 53 ? qbits - 53 : 0;
    uint64_t m = (uint64_t)(q >> extra);
    if (extra) {
        uint64_t rem = (uint64_t)(q & ((((unsigned __int128)1) << extra) - 1)), half = (uint64_t)1 << (extra - 1);
        if (rem > half || (rem == half && (sticky || (m & 1)))) m++;
    }
    return ldexp((double)m, extra - s);
}

static int pcapng_next(Scanner *s, const uint8_t **data, size_t *n, double *ts, uint32_t *lt) {
    char msg[112];
    for (;;) {
        size_t have = ensure(s, 8);
        if (have == 0) return 0;
        uint64_t pos = cur_off(s);
        if (have < 8) {
            snprintf(msg, sizeof msg, "truncated block header (%zu of 8 bytes)", have);
            scan_fail(s, msg, 1, pos);
            return -1;
        }
        const uint8_t *b = s->buf + s->pos;
        uint32_t btype, blen;
        if (be32(b) == 0x0A0D0D0A) {
            have = ensure(s, 12);
            b = s->buf + s->pos;
            if (have < 12) {
                snprintf(msg, sizeof msg, "truncated section header (%zu of 12 bytes)", have);
                scan_fail(s, msg, 1, pos);
                return -1;
            }
            uint32_t bom = be32(b + 8);
            if (bom == 0x1A2B3C4D) s->big = 1;
            else if (bom == 0x4D3C2B1A) s->big = 0;
            else {
                if (pos == 0) { scan_fail(s, "not a pcap or pcapng file", 0, 0); return -1; }
                snprintf(msg, sizeof msg, "bad byte-order magic %02x%02x%02x%02x in section header",
                         b[8], b[9], b[10], b[11]);
                scan_fail(s, msg, 1, pos);
                return -1;
            }
            btype = 0x0A0D0D0A;
            blen = rd32(s, b + 4);
            if (blen < 28 || blen % 4 || blen > MAX_BLOCK) {
                snprintf(msg, sizeof msg, "bad section header length %u", blen);
                scan_fail(s, msg, 1, pos);
                return -1;
            }
        } else {
            btype = rd32(s, b);
            blen = rd32(s, b + 4);
            if (blen < 12 || blen % 4 || blen > MAX_BLOCK) {
                snprintf(msg, sizeof msg, "bad block length %u (block type 0x%x)", blen, btype);
                scan_fail(s, msg, 1, pos);
                return -1;
            }
        }
        have = ensure(s, blen);
        b = s->buf + s->pos;
        if (have < blen) {
            snprintf(msg, sizeof msg, "truncated block (%zu of %u bytes)", have, blen);
            scan_fail(s, msg, 1, pos);
            return -1;
        }
        if (rd32(s, b + blen - 4) != blen) {
            snprintf(msg, sizeof msg, "block length %u does not match its trailing copy", blen);
            scan_fail(s, msg, 1, pos);
            return -1;
        }
        const uint8_t *body = b + 8;
        if (btype == 6 || btype == 2) { /* EPB / obsolete PB */
            if (blen < 32) {
                snprintf(msg, sizeof msg, "packet block too short (%u bytes)", blen);
                scan_fail(s, msg, 1, pos);
                return -1;
            }
            uint32_t ifid, high, low, caplen;
            if (btype == 6) {
                ifid = rd32(s, body); high = rd32(s, body + 4); low = rd32(s, body + 8); caplen = rd32(s, body + 12);
            } else {
                ifid = rd16(s, body); high = rd32(s, body + 4); low = rd32(s, body + 8); caplen = rd32(s, body + 12);
            }
            if (caplen > blen - 32) {
                snprintf(msg, sizeof msg, "captured length %u exceeds its block", caplen);
                scan_fail(s, msg, 1, pos);
                return -1;
            }
            if (ifid >= s->n_if) {
                snprintf(msg, sizeof msg, "interface %u not described by an IDB (%zu in this section)", ifid, s->n_if);
                scan_fail(s, msg, 1, pos);
                return -1;
            }
            uint64_t v = ((uint64_t)high << 32) | low, u = s->if_units[ifid];
            *ts = div_round(v, u) + (double)s->if_off[ifid];
            *data = body + 20;
            *n = caplen;
            *lt = s->if_link[ifid];
            s->pos += blen;
            s->frame++;
            s->frames++;
            return 1;
        }
        if (btype == 3) { /* SPB */
            if (blen < 16) {
                snprintf(msg, sizeof msg, "simple packet block too short (%u bytes)", blen);
                scan_fail(s, msg, 1, pos);
                return -1;
            }
            if (!s->n_if) { scan_fail(s, "simple packet block before any IDB", 1, pos); return -1; }
            uint32_t caplen = rd32(s, body), lim = blen - 16, snap = s->if_snap[0] ? s->if_snap[0] : MAX_BLOCK;
            if (caplen > lim) caplen = lim;
            if (caplen > snap) caplen = snap;
            *ts = 0.0;
            *data = body + 4;
            *n = caplen;
            *lt = s->if_link[0];
            s->pos += blen;
            s->frame++;
            s->frames++;
            return 1;
        }
        if (btype == 1) { /* IDB */
            if (blen < 20) {
                snprintf(msg, sizeof msg, "interface description block too short (%u bytes)", blen);
                scan_fail(s, msg, 1, pos);
                return -1;
            }
            uint32_t link = rd16(s, body), snap = rd32(s, body + 4);
            uint64_t units = 1000000; int64_t toff = 0;
            const uint8_t *o = body + 8, *oend = b + blen - 4;
            while (o + 4 <= oend) {
                uint16_t code = rd16(s, o), olen = rd16(s, o + 2);
                if (code == 0 || o + 4 + olen > oend) break;
                if (code == 9 && olen == 1) {
                    unsigned e = o[4] & 0x7F, base = (o[4] & 0x80) ? 2 : 10;
                    if (e > (base == 2 ? 63u : 19u)) { /* units per second must fit 64 bits */
                        snprintf(msg, sizeof msg, "if_tsresol 0x%02x (%u^-%u s) is finer than 64-bit "
                                 "timestamps can count", o[4], base, e);
                        scan_fail(s, msg, 1, pos);
                        return -1;
                    }
                    units = ipow(base, e);
                }
                else if (code == 14 && olen == 8) {
                    uint64_t lo = rd32(s, o + 4), hi = rd32(s, o + 8);
                    toff = (int64_t)(s->big ? (lo << 32 | hi) : (hi << 32 | lo));
                }
                o += 4 + olen + ((4 - olen % 4) % 4);
            }
            if (add_iface(s, link, snap, units, toff) < 0) { PyErr_NoMemory(); s->done = 1; return -1; }
        } else if (btype == 0x0A0D0D0A) {
            uint16_t major = rd16(s, body + 4);
            if (major != 1) {
                snprintf(msg, sizeof msg, "unsupported pcapng version %u", major);
                scan_fail(s, msg, 1, pos);
                return -1;
            }
            s->n_if = 0;
        }
        s->pos += blen;
    }
}

/* ------------------------------------------------------------------------------------ */
/* Python type                                                                           */

static void Scanner_dealloc(Scanner *s) {
    if (s->f) fclose(s->f);
    free(s->buf);
    free(s->if_link); free(s->if_snap); free(s->if_units); free(s->if_off);
    for (size_t i = 0; i < s->count; i++) { free(s->order[i]->bits); free(s->order[i]); }
    free(s->order); free(s->table); free(s->esn);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int Scanner_init(Scanner *s, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "window", NULL};
    PyObject *path;
    unsigned int window = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|I", kwlist, PyUnicode_FSConverter, &path, &window))
        return -1;
    if (window < 1 || window > MAX_WINDOW) {
        Py_DECREF(path);
        PyErr_SetString(PyExc_ValueError, "window must be 1..4096");
        return -1;
    }
    s->window = window;
    s->f = fopen(PyBytes_AS_STRING(path), "rb");
    if (!s->f) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        Py_DECREF(path);
        return -1;
    }
    Py_DECREF(path);
    setvbuf(s->f, NULL, _IONBF, 0);
    s->cap = 4 * READ_CHUNK;
    s->buf = malloc(s->cap);
    if (!s->buf) { PyErr_NoMemory(); return -1; }
    return 0;
}

static PyObject *Scanner_next_frame(Scanner *s, PyObject *Py_UNUSED(ignored)) {
    if (s->done) Py_RETURN_NONE;
    if (!s->started) {
        s->started = 1;
        if (start(s) < 0) return NULL;
    }
    const uint8_t *data; size_t n; double ts; uint32_t lt;
    for (;;) {
        int r = s->format == 1 ? pcap_next(s, &data, &n, &ts, &lt) : pcapng_next(s, &data, &n, &ts, &lt);
        if (r < 0) return NULL;
        if (r == 0) { s->done = 1; Py_RETURN_NONE; }
        int d = decode(s, lt, data, n, ts);
        if (d < 0) return PyErr_NoMemory();
        if (d == 0) return leftover(s, lt, ts, data, n);
        if (s->progress_every && s->fileoff + s->pos >= s->next_mark) {
            s->next_mark = s->fileoff + s->pos + s->progress_every;
            Py_RETURN_FALSE;
        }
    }
}

static PyObject *Scanner_set_progress(Scanner *s, PyObject *arg) {
    unsigned long long every = PyLong_AsUnsignedLongLong(arg);
    if (every == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    s->progress_every = every;
    s->next_mark = s->fileoff + s->pos + every;
    Py_RETURN_NONE;
}

static PyObject *Scanner_feed(Scanner *s, PyObject *args) {
    Py_buffer dst, src;
    unsigned int spi, seq;
    unsigned long long length, frame;
    double ts;
    int encap;
    if (!PyArg_ParseTuple(args, "y*y*IIKdKp", &dst, &src, &spi, &seq, &length, &ts, &frame, &encap)) return NULL;
    if ((dst.len != 4 && dst.len != 16) || src.len != dst.len) {
        PyBuffer_Release(&dst); PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "addresses must be 4 or 16 octets");
        return NULL;
    }
    Sa *t = sa_get(s, dst.buf, (uint8_t)dst.len, src.buf, (uint8_t)src.len, spi, encap);
    PyBuffer_Release(&dst); PyBuffer_Release(&src);
    if (!t) return PyErr_NoMemory();
    sa_observe(t, s->window, seq, length, ts, frame);
    Py_RETURN_NONE;
}

static PyObject *Scanner_set_esn(Scanner *s, PyObject *arg) {
    unsigned long spi = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (s->n_esn == s->cap_esn) {
        size_t nc = s->cap_esn ? s->cap_esn * 2 : 16;
        uint32_t *ne = realloc(s->esn, nc * sizeof *ne);
        if (!ne) return PyErr_NoMemory();
        s->esn = ne; s->cap_esn = nc;
    }
    s->esn[s->n_esn++] = (uint32_t)spi;
    for (size_t i = 0; i < s->count; i++)
        if (s->order[i]->spi == (uint32_t)spi && s->order[i]->packets <= 1) s->order[i]->esn = 1;
    Py_RETURN_NONE;
}

static PyObject *Scanner_sas(Scanner *s, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New((Py_ssize_t)s->count);
    if (!out) return NULL;
    for (size_t i = 0; i < s->count; i++) {
        Sa *t = s->order[i];
        PyObject *row = Py_BuildValue(
            "(y#Iy#iiKKddKKIIKKKKKKKKKKKK)", (const char *)t->dst, (Py_ssize_t)t->dlen, t->spi,
            (const char *)t->src, (Py_ssize_t)t->slen, (int)t->encap, (int)t->esn,
            (unsigned long long)t->packets, (unsigned long long)t->bytes, t->first_ts, t->last_ts,
            (unsigned long long)t->first_frame, (unsigned long long)t->last_frame, t->first_seq, t->last_seq,
            (unsigned long long)t->top, (unsigned long long)t->replays, (long long)t->gaps,
            (unsigned long long)t->late, (unsigned long long)t->reorders, (unsigned long long)t->wraps,
            (unsigned long long)t->seq_zero, (unsigned long long)t->f_replay, (unsigned long long)t->f_gap,
            (unsigned long long)t->f_reorder, (unsigned long long)t->f_wrap, (unsigned long long)t->lowest);
        if (!row) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, (Py_ssize_t)i, row);
    }
    return out;
}

static PyObject *Scanner_stats(Scanner *s, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsN}", "frames", (unsigned long long)s->frames,
                         "datagrams", (unsigned long long)s->datagrams, "not_ip", (unsigned long long)s->not_ip,
                         "other_proto", (unsigned long long)s->other_proto, "esp", (unsigned long long)s->esp,
                         "esp_in_udp", (unsigned long long)s->esp_in_udp,
                         "keepalives", (unsigned long long)s->keepalives, "skipped_linktype", 0ull,
                         "unknown_linktypes", PySet_New(NULL));
}

static PyObject *Scanner_get_offset(Scanner *s, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(s->fileoff + s->pos);
}

static PyMethodDef Scanner_methods[] = {
    {"next_frame", (PyCFunction)Scanner_next_frame, METH_NOARGS,
     "Scan on; return the next frame not settled in C as (frame, ts, linktype, bytes), False at a progress "
     "mark (set_progress), or None at the end."},
    {"feed", (PyCFunction)Scanner_feed, METH_VARARGS,
     "feed(dst, src, spi, seq, length, ts, frame, encap): account an ESP packet found by Python."},
    {"set_esn", (PyCFunction)Scanner_set_esn, METH_O, "Mark an SPI as using Extended Sequence Numbers."},
    {"set_progress", (PyCFunction)Scanner_set_progress, METH_O,
     "set_progress(octets): next_frame() returns False each time this many more file octets were read (0: never)."},
    {"sas", (PyCFunction)Scanner_sas, METH_NOARGS, "Per-SA rows in order of first packet."},
    {"stats", (PyCFunction)Scanner_stats, METH_NOARGS, "Counters of the frames settled in C."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Scanner_getset[] = {
    {"offset", (getter)Scanner_get_offset, NULL, "File octets consumed so far.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dissectors._espscan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Scanner(path, window=64): ESP sequence analysis over a pcap/pcapng file.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
    .tp_getset = Scanner_getset,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_espscan", "ESP sequence analysis hot loop (see analyzer/esp_scan.py).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__espscan(void) {
    if (PyType_Ready(&ScannerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    ScanError = PyErr_NewException("dissectors._espscan.ScanError", NULL, NULL);
    if (!ScanError || PyModule_AddObject(m, "ScanError", ScanError) < 0) { Py_DECREF(m); return NULL; }
    Py_INCREF(ScanError);
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
