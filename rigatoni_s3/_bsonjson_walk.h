/* Raw BSON change events to JSON without Python objects: the walk under _bsonjson_c.
 *
 * Everything here runs without the GIL and touches no Python object. One walker
 * validates a whole event the way pymongo's decoder does (so both accept the same
 * bytes), writes the JSON of the documents it extracts into a growable buffer, and
 * records the envelope as offsets into the input. Doubles are not formatted here:
 * their positions and values are recorded and the caller splices in the text that
 * orjson (or, where the dict path would use the json module, float.__repr__) writes.
 *
 * Shapes whose JSON would depend on Python dict semantics (a repeated key: the dict
 * keeps the first position and the last value) or on odd envelope values (an ``ns``
 * that is a number, a DBRef-shaped ``clusterTime``) end the walk with BJ_FALLBACK;
 * the caller then uses the pure-Python path for that event.
 */
#ifndef RIGATONI_BSONJSON_WALK_H
#define RIGATONI_BSONJSON_WALK_H

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <math.h>

#define BJ_MAX_DEPTH 100
#define BJ_NFIELDS 7

/* The JSON field slots, in the order the caller reads them. Transaction and extra
 * are composed after the walk from pieces found anywhere in the event. */
enum {
    BJ_FIELD_KEY, BJ_FIELD_FULL, BJ_FIELD_UPDATE, BJ_FIELD_TOKEN, BJ_FIELD_BEFORE,
    BJ_FIELD_TRANSACTION, BJ_FIELD_EXTRA,
};

enum { BJ_OK = 0, BJ_REJECT = 1, BJ_FALLBACK = 2, BJ_NOMEM = 3 };

/* How the caller writes a recorded double. */
enum {
    BJ_FLOAT_ORJSON = 0,  /* finite, orjson's text */
    BJ_FLOAT_REPR = 1,    /* finite, float.__repr__ (the field goes through the json module) */
    BJ_FLOAT_NULL = 2,    /* non-finite inside a DBRef, which orjson writes as null */
    BJ_FLOAT_EXTJSON = 3, /* non-finite, {"$numberDouble": ...} */
};

typedef struct {
    size_t pos;   /* where the text goes in the output buffer */
    double value;
    int mode;     /* BJ_FLOAT_*, set when the field is complete */
    int in_dbref;
} bj_float;

typedef struct {
    const uint8_t *key;
    size_t key_len;
    uint32_t hash;
    uint8_t type;
    size_t seg_start, seg_end; /* the element's "key":value in the output */
} bj_elem;

/* Top-level fields the walker extracts; every other top-level element goes into the
 * extra object. Add a row (and, for a JSON field, a slot) to extract one more. */
enum {
    BJ_TOP_OPERATION, BJ_TOP_NS, BJ_TOP_CLUSTER_TIME, BJ_TOP_WALL_TIME, BJ_TOP_JSON,
    BJ_TOP_TXN,
};

typedef struct {
    const char *name;
    size_t len;
    int kind;
    int field; /* the JSON slot for BJ_TOP_JSON, the part of the transaction for BJ_TOP_TXN */
} bj_top;

static const bj_top BJ_TOP_FIELDS[] = {
    {"operationType", 13, BJ_TOP_OPERATION, -1},
    {"ns", 2, BJ_TOP_NS, -1},
    {"clusterTime", 11, BJ_TOP_CLUSTER_TIME, -1},
    {"wallTime", 8, BJ_TOP_WALL_TIME, -1},
    {"documentKey", 11, BJ_TOP_JSON, BJ_FIELD_KEY},
    {"fullDocument", 12, BJ_TOP_JSON, BJ_FIELD_FULL},
    {"updateDescription", 17, BJ_TOP_JSON, BJ_FIELD_UPDATE},
    {"_id", 3, BJ_TOP_JSON, BJ_FIELD_TOKEN},
    {"fullDocumentBeforeChange", 24, BJ_TOP_JSON, BJ_FIELD_BEFORE},
    {"txnNumber", 9, BJ_TOP_TXN, 0},
    {"lsid", 4, BJ_TOP_TXN, 1},
};
#define BJ_NTOP (sizeof(BJ_TOP_FIELDS) / sizeof(BJ_TOP_FIELDS[0]))

/* The result for one event. Offsets of -1 mean absent (None). */
typedef struct {
    int status;
    char reason[192];
    int64_t op_off, op_len;
    int64_t db_off, db_len;
    int64_t coll_off, coll_len;
    int has_cluster_time;
    int64_t cluster_ms;
    int has_cluster_inc;
    int64_t cluster_inc;
    int has_wall_time;
    int64_t wall_ms;
    int64_t field_start[BJ_NFIELDS], field_end[BJ_NFIELDS];
    size_t field_floats[BJ_NFIELDS][2]; /* the field's doubles: [first, last) in floats */
    int64_t span_start, span_end;
    int64_t head_start, head_end; /* the JSON Lines head, when asked for */
    int64_t mid_start, mid_end;   /* and its wall_time and cluster_time_increment */
    uint8_t *out;
    size_t out_len, out_cap;
    bj_float *floats;
    size_t nfloats, floats_cap;
} bj_event;

/* A value written where the walk met it, to be copied into a composed object:
 * its text is out[start, end), its doubles floats[first, last). */
typedef struct {
    size_t start, end;
    size_t first, last;
    int moved; /* a DBRef inside left its floats out of position order */
} bj_piece;

typedef struct {
    const uint8_t *b;
    size_t size;
    bj_event *ev;
    int quiet;          /* > 0 while walking values nobody reads: no repeat/DBRef checks */
    int floats_moved;   /* a DBRef reordering left floats out of position order */
    bj_elem *elems;     /* a stack shared by the documents being walked */
    size_t nelems, elems_cap;
    bj_piece txn[2];    /* txnNumber, lsid; start == SIZE_MAX when absent or null */
    bj_piece *extra;    /* the unknown top-level elements, "key":value each, in order */
    size_t nextra, extra_cap;
} bj_walker;

/* ---- output ------------------------------------------------------------------ */

static int bj_nomem(bj_walker *w) {
    w->ev->status = BJ_NOMEM;
    return -1;
}

static int bj_reserve(bj_walker *w, size_t extra) {
    bj_event *ev = w->ev;
    if (ev->out_cap - ev->out_len >= extra) return 0;
    /* The JSON of an event is about as long as its BSON: start there. */
    size_t cap = ev->out_cap ? ev->out_cap : w->size + w->size / 4 + 256;
    while (cap - ev->out_len < extra) {
        if (cap > SIZE_MAX / 2) return bj_nomem(w);
        cap *= 2;
    }
    uint8_t *p = (uint8_t *)realloc(ev->out, cap);
    if (!p) return bj_nomem(w);
    ev->out = p;
    ev->out_cap = cap;
    return 0;
}

#define BJ_PUT(w, s, n) do { \
        if (bj_reserve((w), (n))) return -1; \
        memcpy((w)->ev->out + (w)->ev->out_len, (s), (n)); \
        (w)->ev->out_len += (n); \
    } while (0)
#define BJ_LIT(w, lit) BJ_PUT((w), (lit), sizeof(lit) - 1)
#define BJ_CH(w, c) do { \
        if (bj_reserve((w), 1)) return -1; \
        (w)->ev->out[(w)->ev->out_len++] = (uint8_t)(c); \
    } while (0)

static int bj_reject(bj_walker *w, size_t offset, const char *what) {
    w->ev->status = BJ_REJECT;
    snprintf(w->ev->reason, sizeof w->ev->reason, "malformed BSON: %s at offset %zu", what, offset);
    return -1;
}

static int bj_fallback(bj_walker *w) {
    w->ev->status = BJ_FALLBACK;
    return -1;
}

/* ---- little-endian reads ------------------------------------------------------- */

static inline uint32_t bj_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t bj_u64(const uint8_t *p) {
    return (uint64_t)bj_u32(p) | ((uint64_t)bj_u32(p + 4) << 32);
}

/* ---- text -------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence (of a non-ASCII lead byte) at s, 0 if invalid. */
static inline size_t bj_utf8_seq(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n <= need || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k <= need; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return need + 1;
}

/* Length of the valid UTF-8 prefix of s, by Python's strict rules: no overlong
 * forms, no surrogates, nothing above U+10FFFF. */
static size_t bj_utf8_valid_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t chunk;
            memcpy(&chunk, s + i, 8);
            if (!(chunk & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t len = bj_utf8_seq(s + i, n - i);
        if (!len) return i;
        i += len;
    }
    return n;
}

static int bj_check_utf8(bj_walker *w, const uint8_t *s, size_t n, const char *what) {
    size_t ok = bj_utf8_valid_prefix(s, n);
    if (ok != n) {
        char msg[64];
        snprintf(msg, sizeof msg, "%s is not valid UTF-8", what);
        return bj_reject(w, (size_t)(s + ok - w->b), msg);
    }
    return 0;
}

/* 1 for the bytes the text writer must look at: those it escapes (control characters,
 * quote, backslash) and non-ASCII lead or continuation bytes. */
static const uint8_t BJ_LOOK[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

static const char BJ_HEX[] = "0123456789abcdef";


#define BJ_ONES UINT64_C(0x0101010101010101)
#define BJ_HIGHS UINT64_C(0x8080808080808080)

/* Nonzero if any of the 8 bytes needs a look: below 0x20, '"', '\\' or non-ASCII
 * (the has-less and has-zero word tricks, exact as a yes/no). */
static inline uint64_t bj_needs_look(uint64_t x) {
    uint64_t quote = x ^ (BJ_ONES * 0x22), backslash = x ^ (BJ_ONES * 0x5C);
    return (((x - BJ_ONES * 0x20) & ~x) | ((quote - BJ_ONES) & ~quote) |
            ((backslash - BJ_ONES) & ~backslash) | x) &
           BJ_HIGHS;
}

/* Text as a JSON string, checked as strict UTF-8 on the way (Python's rules: no overlong
 * forms, no surrogates, nothing above U+10FFFF), escaped as orjson and json.dumps both
 * do: quote, backslash and control characters only. */
static int bj_text(bj_walker *w, const uint8_t *s, size_t n, const char *what) {
    BJ_CH(w, '"');
    size_t i = 0, run = 0;
    while (i < n) {
        while (i + 8 <= n) { /* plain ASCII, eight bytes at a time */
            uint64_t x;
            memcpy(&x, s + i, 8);
            if (bj_needs_look(x)) break;
            i += 8;
        }
        while (i < n && !BJ_LOOK[s[i]]) i++;
        if (i == n) break;
        uint8_t c = s[i];
        if (c >= 0x80) {
            size_t len = bj_utf8_seq(s + i, n - i);
            if (!len) {
                char msg[64];
                snprintf(msg, sizeof msg, "%s is not valid UTF-8", what);
                return bj_reject(w, (size_t)(s + i - w->b), msg);
            }
            i += len;
            continue;
        }
        if (bj_reserve(w, (i - run) + 6)) return -1;
        bj_event *ev = w->ev;
        memcpy(ev->out + ev->out_len, s + run, i - run);
        ev->out_len += i - run;
        uint8_t *o = ev->out + ev->out_len;
        o[0] = '\\';
        switch (c) {
        case '"': o[1] = '"'; ev->out_len += 2; break;
        case '\\': o[1] = '\\'; ev->out_len += 2; break;
        case '\b': o[1] = 'b'; ev->out_len += 2; break;
        case '\t': o[1] = 't'; ev->out_len += 2; break;
        case '\n': o[1] = 'n'; ev->out_len += 2; break;
        case '\f': o[1] = 'f'; ev->out_len += 2; break;
        case '\r': o[1] = 'r'; ev->out_len += 2; break;
        default:
            o[1] = 'u'; o[2] = '0'; o[3] = '0';
            o[4] = (uint8_t)BJ_HEX[c >> 4];
            o[5] = (uint8_t)BJ_HEX[c & 15];
            ev->out_len += 6;
        }
        i++;
        run = i;
    }
    BJ_PUT(w, s + run, n - run);
    BJ_CH(w, '"');
    return 0;
}

static int bj_int(bj_walker *w, int64_t v) {
    char buf[24];
    char *p = buf + sizeof buf;
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + m % 10);
        m /= 10;
    } while (m);
    if (v < 0) *--p = '-';
    BJ_PUT(w, p, (size_t)(buf + sizeof buf - p));
    return 0;
}

static int bj_base64(bj_walker *w, const uint8_t *s, size_t n) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = 4 * ((n + 2) / 3) + 2;
    if (bj_reserve(w, len)) return -1;
    uint8_t *o = w->ev->out + w->ev->out_len;
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8) | s[i + 2];
        o[0] = (uint8_t)A[v >> 18];
        o[1] = (uint8_t)A[(v >> 12) & 63];
        o[2] = (uint8_t)A[(v >> 6) & 63];
        o[3] = (uint8_t)A[v & 63];
        o += 4;
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        o[0] = (uint8_t)A[v >> 18];
        o[1] = (uint8_t)A[(v >> 12) & 63];
        o[2] = '=';
        o[3] = '=';
        o += 4;
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8);
        o[0] = (uint8_t)A[v >> 18];
        o[1] = (uint8_t)A[(v >> 12) & 63];
        o[2] = (uint8_t)A[(v >> 6) & 63];
        o[3] = '=';
        o += 4;
    }
    *o++ = '"';
    w->ev->out_len += len;
    return 0;
}

/* Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm). */
static void bj_civil(int64_t z, int64_t *year, unsigned *month, unsigned *day) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *day = doy - (153 * mp + 2) / 5 + 1;
    *month = mp < 10 ? mp + 3 : mp - 9;
    *year = (int64_t)yoe + era * 400 + (*month <= 2);
}

#define BJ_MIN_MS INT64_C(-62135596800000) /* 0001-01-01T00:00:00 */
#define BJ_MAX_MS INT64_C(253402300799999) /* 9999-12-31T23:59:59.999 */

/* A BSON datetime as the dict path writes it: ISO-8601 with Z inside datetime's
 * range, the plain number of milliseconds outside it (pymongo's DatetimeMS). */
static int bj_datetime(bj_walker *w, int64_t ms) {
    if (ms < BJ_MIN_MS || ms > BJ_MAX_MS) return bj_int(w, ms);
    int64_t days = ms / 86400000;
    int64_t rem = ms % 86400000;
    if (rem < 0) {
        rem += 86400000;
        days -= 1;
    }
    int64_t year;
    unsigned month, day;
    bj_civil(days, &year, &month, &day);
    unsigned msec = (unsigned)(rem % 1000);
    unsigned secs = (unsigned)(rem / 1000);
    unsigned fields[6] = {(unsigned)year, month, day, secs / 3600, secs / 60 % 60, secs % 60};
    /* "YYYY-MM-DDTHH:MM:SS" then ".mmm000" if there are milliseconds, then "Z" */
    char buf[32];
    char *o = buf;
    *o++ = '"';
    *o++ = (char)('0' + fields[0] / 1000);
    *o++ = (char)('0' + fields[0] / 100 % 10);
    *o++ = (char)('0' + fields[0] / 10 % 10);
    *o++ = (char)('0' + fields[0] % 10);
    static const char SEPARATORS[] = "--T::";
    for (int i = 1; i < 6; i++) {
        *o++ = SEPARATORS[i - 1];
        *o++ = (char)('0' + fields[i] / 10);
        *o++ = (char)('0' + fields[i] % 10);
    }
    if (msec) {
        *o++ = '.';
        *o++ = (char)('0' + msec / 100);
        *o++ = (char)('0' + msec / 10 % 10);
        *o++ = (char)('0' + msec % 10);
        memcpy(o, "000", 3);
        o += 3;
    }
    *o++ = 'Z';
    *o++ = '"';
    BJ_PUT(w, buf, (size_t)(o - buf));
    return 0;
}

#define BJ_DECIMAL128_TEXT 80

/* str(Decimal128) of the 16 bytes at `p`, quoted as a JSON string, into `out`; returns
 * its length. Python's Decimal.__str__ of what pymongo's to_decimal builds. */
static size_t bj_decimal128_text(const uint8_t *p, char out[BJ_DECIMAL128_TEXT]) {
    uint64_t low = bj_u64(p), high = bj_u64(p + 8);
    int negative = (high >> 63) != 0;
    size_t n = 0;
    if ((high & UINT64_C(0x7C00000000000000)) == UINT64_C(0x7C00000000000000)) {
        memcpy(out, "\"NaN\"", 5); /* pymongo writes every NaN, signed or signalling, as NaN */
        return 5;
    }
    if ((high & UINT64_C(0x7800000000000000)) == UINT64_C(0x7800000000000000)) {
        if (negative) {
            memcpy(out, "\"-Infinity\"", 11);
            return 11;
        }
        memcpy(out, "\"Infinity\"", 10);
        return 10;
    }
    int64_t exponent;
    unsigned __int128 coefficient;
    if ((high & UINT64_C(0x6000000000000000)) == UINT64_C(0x6000000000000000)) {
        exponent = (int64_t)((high & UINT64_C(0x1FFFE00000000000)) >> 47) - 6176;
        coefficient = 0; /* this form's significand always exceeds 34 digits */
    } else {
        exponent = (int64_t)((high & UINT64_C(0x7FFF800000000000)) >> 49) - 6176;
        coefficient = ((unsigned __int128)(high & UINT64_C(0x1FFFFFFFFFFFF)) << 64) | low;
        unsigned __int128 max = 1;
        for (int i = 0; i < 34; i++) max *= 10;
        if (coefficient >= max) coefficient = 0; /* more than 34 digits counts as 0 */
    }
    char digits[40];
    size_t nd = 0;
    char rev[40];
    do {
        rev[nd++] = (char)('0' + (int)(coefficient % 10));
        coefficient /= 10;
    } while (coefficient);
    for (size_t i = 0; i < nd; i++) digits[i] = rev[nd - 1 - i];
    int64_t leftdigits = exponent + (int64_t)nd;
    int64_t dotplace;
    if (exponent <= 0 && leftdigits > -6)
        dotplace = leftdigits;
    else
        dotplace = 1;
    out[n++] = '"';
    if (negative) out[n++] = '-';
    if (dotplace <= 0) {
        out[n++] = '0';
        out[n++] = '.';
        for (int64_t i = 0; i < -dotplace; i++) out[n++] = '0';
        memcpy(out + n, digits, nd);
        n += nd;
    } else if (dotplace >= (int64_t)nd) {
        memcpy(out + n, digits, nd);
        n += nd;
        for (int64_t i = 0; i < dotplace - (int64_t)nd; i++) out[n++] = '0';
    } else {
        memcpy(out + n, digits, (size_t)dotplace);
        n += (size_t)dotplace;
        out[n++] = '.';
        memcpy(out + n, digits + dotplace, nd - (size_t)dotplace);
        n += nd - (size_t)dotplace;
    }
    if (leftdigits != dotplace) {
        n += (size_t)snprintf(out + n, BJ_DECIMAL128_TEXT - n, "E%+lld",
                              (long long)(leftdigits - dotplace));
    }
    out[n++] = '"';
    return n;
}

static int bj_decimal128(bj_walker *w, const uint8_t *p) {
    char out[BJ_DECIMAL128_TEXT];
    size_t n = bj_decimal128_text(p, out);
    BJ_PUT(w, out, n);
    return 0;
}

/* Room for `extra` more recorded doubles. */
static int bj_reserve_floats(bj_walker *w, size_t extra) {
    bj_event *ev = w->ev;
    if (ev->floats_cap - ev->nfloats >= extra) return 0;
    size_t cap = ev->floats_cap ? ev->floats_cap : 16;
    while (cap - ev->nfloats < extra) {
        if (cap > SIZE_MAX / 2 / sizeof(bj_float)) return bj_nomem(w);
        cap *= 2;
    }
    bj_float *p = (bj_float *)realloc(ev->floats, cap * sizeof *p);
    if (!p) return bj_nomem(w);
    ev->floats = p;
    ev->floats_cap = cap;
    return 0;
}

static int bj_record_float(bj_walker *w, double value) {
    bj_event *ev = w->ev;
    if (bj_reserve_floats(w, 1)) return -1;
    bj_float *f = &ev->floats[ev->nfloats++];
    f->pos = ev->out_len;
    f->value = value;
    f->mode = BJ_FLOAT_ORJSON;
    f->in_dbref = 0;
    return 0;
}

/* ---- the walk ---------------------------------------------------------------- */

static int bj_doc(bj_walker *w, size_t at, size_t end, int depth, int is_array, int *is_dbref);

static inline int bj_is_text(uint8_t type) {
    return type == 0x02 || type == 0x0D || type == 0x0E || type == 0x0F;
}

/* A length-prefixed string at `at` (value inside [at, end)): its text's offset and
 * length; checked as pymongo does (positive length, in bounds, NUL-terminated, UTF-8). */
static int bj_string(bj_walker *w, size_t at, size_t end, size_t *text, size_t *len,
                     const char *what) {
    if (end - at < 4) return bj_reject(w, at, "truncated string length");
    uint32_t n = bj_u32(w->b + at);
    if (n == 0 || n > end - at - 4) return bj_reject(w, at, "string length out of bounds");
    if (w->b[at + 4 + n - 1] != 0) return bj_reject(w, at + 4 + n - 1, "string without its NUL");
    (void)what; /* the caller writes it with bj_text, which checks the UTF-8 */
    *text = at + 4;
    *len = n - 1;
    return 0;
}

/* Validates the value of type `type` at `at` (which must end by `end`), writes its
 * JSON, and sets *next to the offset after it. */
static int bj_value(bj_walker *w, uint8_t type, size_t at, size_t end, int depth, size_t *next) {
    const uint8_t *b = w->b;
    size_t room = end - at;
    switch (type) {
    case 0x01: { /* double */
        if (room < 8) return bj_reject(w, at, "truncated double");
        uint64_t bits = bj_u64(b + at);
        double d;
        memcpy(&d, &bits, 8);
        if (bj_record_float(w, d)) return -1;
        *next = at + 8;
        return 0;
    }
    case 0x02: case 0x0D: case 0x0E: { /* string, code, symbol */
        size_t text, len;
        if (bj_string(w, at, end, &text, &len, "string")) return -1;
        if (bj_text(w, b + text, len, "string")) return -1;
        *next = text + len + 1;
        return 0;
    }
    case 0x03: case 0x04:
        if (bj_doc(w, at, end, depth + 1, type == 0x04, NULL)) return -1;
        *next = at + bj_u32(b + at);
        return 0;
    case 0x05: { /* binary */
        if (room < 5) return bj_reject(w, at, "truncated binary");
        uint32_t n = bj_u32(b + at);
        if (n > room - 5) return bj_reject(w, at, "binary length out of bounds");
        uint8_t subtype = b[at + 4];
        const uint8_t *data = b + at + 5;
        size_t data_len = n;
        if (subtype == 2) {
            if (n < 4 || bj_u32(data) != n - 4)
                return bj_reject(w, at, "binary subtype 2 with an inconsistent inner length");
            data += 4;
            data_len -= 4;
        }
        if (bj_base64(w, data, data_len)) return -1;
        *next = at + 5 + n;
        return 0;
    }
    case 0x06: case 0x0A: /* undefined, null */
        BJ_LIT(w, "null");
        *next = at;
        return 0;
    case 0x07: { /* ObjectId */
        if (room < 12) return bj_reject(w, at, "truncated ObjectId");
        char hex[26];
        hex[0] = '"';
        for (int i = 0; i < 12; i++) {
            hex[1 + 2 * i] = BJ_HEX[b[at + i] >> 4];
            hex[2 + 2 * i] = BJ_HEX[b[at + i] & 15];
        }
        hex[25] = '"';
        BJ_PUT(w, hex, 26);
        *next = at + 12;
        return 0;
    }
    case 0x08:
        if (room < 1) return bj_reject(w, at, "truncated boolean");
        if (b[at] == 0) BJ_LIT(w, "false");
        else if (b[at] == 1) BJ_LIT(w, "true");
        else return bj_reject(w, at, "boolean neither 0 nor 1");
        *next = at + 1;
        return 0;
    case 0x09:
        if (room < 8) return bj_reject(w, at, "truncated datetime");
        if (bj_datetime(w, (int64_t)bj_u64(b + at))) return -1;
        *next = at + 8;
        return 0;
    case 0x0B: { /* regex: two C strings */
        const uint8_t *nul = (const uint8_t *)memchr(b + at, 0, room);
        if (!nul) return bj_reject(w, at, "regex pattern without its NUL");
        size_t plen = (size_t)(nul - (b + at));
        size_t fat = at + plen + 1;
        const uint8_t *fnul = (const uint8_t *)memchr(b + fat, 0, end - fat);
        if (!fnul) return bj_reject(w, fat, "regex options without their NUL");
        size_t flen = (size_t)(fnul - (b + fat));
        if (bj_check_utf8(w, b + fat, flen, "regex options")) return -1;
        int seen[6] = {0};
        static const char LETTERS[] = "ilmsux";
        for (size_t i = 0; i < flen; i++) {
            const char *hit = memchr(LETTERS, b[fat + i], 6);
            if (hit && b[fat + i]) seen[hit - LETTERS] = 1;
        }
        BJ_LIT(w, "{\"$regularExpression\":{\"pattern\":");
        if (bj_text(w, b + at, plen, "regex pattern")) return -1;
        BJ_LIT(w, ",\"options\":\"");
        for (int i = 0; i < 6; i++)
            if (seen[i]) BJ_CH(w, LETTERS[i]);
        BJ_LIT(w, "\"}}");
        *next = fat + flen + 1;
        return 0;
    }
    case 0x0C: { /* DBPointer: a namespace and an ObjectId, decoded as a DBRef */
        size_t text, len;
        if (bj_string(w, at, end, &text, &len, "DBPointer namespace")) return -1;
        size_t oid = text + len + 1;
        if (end - oid < 12) return bj_reject(w, oid, "truncated DBPointer");
        BJ_LIT(w, "{\"$ref\":");
        if (bj_text(w, b + text, len, "DBPointer namespace")) return -1;
        BJ_LIT(w, ",\"$id\":");
        size_t ignored;
        if (bj_value(w, 0x07, oid, end, depth, &ignored)) return -1;
        BJ_CH(w, '}');
        *next = oid + 12;
        return 0;
    }
    case 0x0F: { /* code with scope: only the code is written */
        if (room < 14) return bj_reject(w, at, "truncated code with scope");
        uint32_t total = bj_u32(b + at);
        if (total < 14 || total > room) return bj_reject(w, at, "code with scope length out of bounds");
        size_t stop = at + total;
        size_t text, len;
        if (bj_string(w, at + 4, stop, &text, &len, "code")) return -1;
        size_t scope = text + len + 1;
        if (stop - scope < 5 || bj_u32(b + scope) != stop - scope)
            return bj_reject(w, scope, "code with scope lengths disagree");
        if (bj_text(w, b + text, len, "code")) return -1;
        size_t out_mark = w->ev->out_len, float_mark = w->ev->nfloats;
        w->quiet++;
        int rc = bj_doc(w, scope, stop, depth + 1, 0, NULL);
        w->quiet--;
        if (rc) return -1;
        w->ev->out_len = out_mark; /* the scope is checked, not written */
        w->ev->nfloats = float_mark;
        *next = stop;
        return 0;
    }
    case 0x10:
        if (room < 4) return bj_reject(w, at, "truncated int32");
        if (bj_int(w, (int32_t)bj_u32(b + at))) return -1;
        *next = at + 4;
        return 0;
    case 0x11: { /* Timestamp: increment, then seconds */
        if (room < 8) return bj_reject(w, at, "truncated Timestamp");
        BJ_LIT(w, "{\"t\":");
        if (bj_int(w, bj_u32(b + at + 4))) return -1;
        BJ_LIT(w, ",\"i\":");
        if (bj_int(w, bj_u32(b + at))) return -1;
        BJ_CH(w, '}');
        *next = at + 8;
        return 0;
    }
    case 0x12:
        if (room < 8) return bj_reject(w, at, "truncated int64");
        if (bj_int(w, (int64_t)bj_u64(b + at))) return -1;
        *next = at + 8;
        return 0;
    case 0x13:
        if (room < 16) return bj_reject(w, at, "truncated Decimal128");
        if (bj_decimal128(w, b + at)) return -1;
        *next = at + 16;
        return 0;
    case 0xFF:
        BJ_LIT(w, "{\"$minKey\":1}");
        *next = at;
        return 0;
    case 0x7F:
        BJ_LIT(w, "{\"$maxKey\":1}");
        *next = at;
        return 0;
    default: {
        char msg[48];
        snprintf(msg, sizeof msg, "unknown element type 0x%02x", type);
        return bj_reject(w, at, msg);
    }
    }
}

static uint32_t bj_hash(const uint8_t *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

static int bj_push_elem(bj_walker *w, const uint8_t *key, size_t key_len, uint8_t type,
                        size_t seg_start) {
    if (w->nelems == w->elems_cap) {
        size_t cap = w->elems_cap ? w->elems_cap * 2 : 64;
        bj_elem *p = (bj_elem *)realloc(w->elems, cap * sizeof *p);
        if (!p) return bj_nomem(w);
        w->elems = p;
        w->elems_cap = cap;
    }
    bj_elem *e = &w->elems[w->nelems++];
    e->key = key;
    e->key_len = key_len;
    e->hash = bj_hash(key, key_len);
    e->type = type;
    e->seg_start = seg_start;
    e->seg_end = seg_start;
    return 0;
}

static int bj_cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* 1 if two of the n elements share a key, 0 if not, -1 out of memory. */
static int bj_has_repeat(bj_walker *w, const bj_elem *e, size_t n) {
    if (n < 2) return 0;
    if (n <= 24) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (e[i].hash == e[j].hash && e[i].key_len == e[j].key_len &&
                    !memcmp(e[i].key, e[j].key, e[i].key_len))
                    return 1;
        return 0;
    }
    uint64_t *keys = (uint64_t *)malloc(n * sizeof *keys);
    if (!keys) return bj_nomem(w);
    for (size_t i = 0; i < n; i++) keys[i] = ((uint64_t)e[i].hash << 32) | i;
    qsort(keys, n, sizeof *keys, bj_cmp_u64);
    int repeat = 0;
    for (size_t i = 1; i < n && !repeat; i++) {
        for (size_t j = i; j-- > 0 && (keys[j] >> 32) == (keys[i] >> 32);) {
            const bj_elem *a = &e[keys[i] & 0xFFFFFFFF], *c = &e[keys[j] & 0xFFFFFFFF];
            if (a->key_len == c->key_len && !memcmp(a->key, c->key, a->key_len)) {
                repeat = 1;
                break;
            }
        }
    }
    free(keys);
    return repeat;
}

static int bj_key_is(const bj_elem *e, const char *name, size_t len) {
    return e->key_len == len && !memcmp(e->key, name, len);
}

/* pymongo turns a document with "$ref" (text) and "$id", and "$db" text or null if
 * present, into a DBRef, which the dict path writes as $ref, $id, $db unless null,
 * then the other keys in order. Rewrites the document's JSON that way. */
static int bj_dbref(bj_walker *w, bj_elem *e, size_t n, size_t body, size_t float_base,
                    int *is_dbref) {
    long ref = -1, id = -1, db = -1;
    for (size_t i = 0; i < n; i++) {
        if (bj_key_is(&e[i], "$ref", 4)) ref = (long)i;
        else if (bj_key_is(&e[i], "$id", 3)) id = (long)i;
        else if (bj_key_is(&e[i], "$db", 3)) db = (long)i;
    }
    if (ref < 0 || id < 0 || !bj_is_text(e[ref].type)) return 0;
    if (db >= 0 && !bj_is_text(e[db].type) && e[db].type != 0x0A && e[db].type != 0x06) return 0;
    if (is_dbref) *is_dbref = 1;
    bj_event *ev = w->ev;
    size_t end = ev->out_len - 1; /* before the closing brace */
    size_t span = end - body;
    uint8_t *copy = (uint8_t *)malloc(span ? span : 1);
    if (!copy) return bj_nomem(w);
    memcpy(copy, ev->out + body, span);
    long order[3] = {ref, id, (db >= 0 && bj_is_text(e[db].type)) ? db : -1};
    size_t *moved_to = (size_t *)malloc(n * sizeof *moved_to);
    if (!moved_to) {
        free(copy);
        return bj_nomem(w);
    }
    for (size_t i = 0; i < n; i++) moved_to[i] = SIZE_MAX; /* dropped: a null $db */
    size_t at = body;
    int first = 1;
    for (size_t pass = 0; pass < 3 + n; pass++) {
        long i;
        if (pass < 3) {
            i = order[pass];
            if (i < 0) continue;
        } else {
            i = (long)(pass - 3);
            if (i == ref || i == id || i == db) continue;
        }
        if (!first) ev->out[at++] = ',';
        first = 0;
        size_t len = e[i].seg_end - e[i].seg_start;
        memcpy(ev->out + at, copy + (e[i].seg_start - body), len);
        moved_to[i] = at;
        at += len;
    }
    /* Segments are disjoint and a double's text goes at a point inside one (or at its
     * end, for a double value of this document), so each float belongs to one. */
    for (size_t f = float_base; f < ev->nfloats; f++) {
        size_t pos = ev->floats[f].pos;
        for (size_t i = 0; i < n; i++) {
            if (pos >= e[i].seg_start && pos <= e[i].seg_end) {
                if (moved_to[i] != SIZE_MAX) ev->floats[f].pos = pos - e[i].seg_start + moved_to[i];
                break;
            }
        }
        ev->floats[f].in_dbref = 1;
    }
    free(moved_to);
    free(copy);
    ev->out[at++] = '}';
    ev->out_len = at;
    w->floats_moved = 1;
    return 0;
}

/* The document or array at `at`, which must end by `end`: checked, and written as
 * JSON unless the walker is quiet and the caller discards it. */
static int bj_doc(bj_walker *w, size_t at, size_t end, int depth, int is_array, int *is_dbref) {
    const uint8_t *b = w->b;
    if (depth > BJ_MAX_DEPTH) {
        char msg[64];
        snprintf(msg, sizeof msg, "nested deeper than %d documents or arrays", BJ_MAX_DEPTH);
        return bj_reject(w, at, msg);
    }
    if (end - at < 5) return bj_reject(w, at, "truncated document");
    uint32_t size = bj_u32(b + at);
    if (size < 5 || size > end - at) return bj_reject(w, at, "document length out of bounds");
    size_t stop = at + size - 1; /* the terminating NUL */
    if (b[stop] != 0) return bj_reject(w, stop, "document without its terminating NUL");
    int track = !is_array && !w->quiet;
    size_t elem_base = w->nelems, float_base = w->ev->nfloats;
    BJ_CH(w, is_array ? '[' : '{');
    size_t body = w->ev->out_len;
    size_t pos = at + 4;
    int first = 1;
    while (pos < stop) {
        uint8_t type = b[pos++];
        const uint8_t *nul = (const uint8_t *)memchr(b + pos, 0, stop - pos);
        if (!nul) return bj_reject(w, pos, "element name without its NUL");
        size_t key_len = (size_t)(nul - (b + pos));
        const uint8_t *key = b + pos;
        if (!first) BJ_CH(w, ',');
        first = 0;
        if (!is_array) {
            if (track && bj_push_elem(w, key, key_len, type, w->ev->out_len)) return -1;
            if (bj_text(w, key, key_len, "element name")) return -1;
            BJ_CH(w, ':');
        }
        pos += key_len + 1;
        size_t next;
        if (bj_value(w, type, pos, stop, depth, &next)) return -1;
        if (track) w->elems[w->nelems - 1].seg_end = w->ev->out_len;
        pos = next;
    }
    BJ_CH(w, is_array ? ']' : '}');
    if (track) {
        size_t n = w->nelems - elem_base;
        int repeat = bj_has_repeat(w, w->elems + elem_base, n);
        if (repeat < 0) return -1;
        if (repeat) return bj_fallback(w);
        if (bj_dbref(w, w->elems + elem_base, n, body, float_base, is_dbref)) return -1;
        w->nelems = elem_base;
    }
    return 0;
}

/* The value and type of `name` in a validated document without repeated keys. */
static int bj_find(bj_walker *w, size_t at, const char *name, size_t len, uint8_t *type,
                   size_t *value) {
    const uint8_t *b = w->b;
    size_t stop = at + bj_u32(b + at) - 1, pos = at + 4;
    while (pos < stop) {
        uint8_t t = b[pos++];
        size_t key_len = strlen((const char *)b + pos);
        int hit = key_len == len && !memcmp(b + pos, name, len);
        pos += key_len + 1;
        if (hit) {
            *type = t;
            *value = pos;
            return 1;
        }
        size_t size;
        switch (t) {
        case 0x01: case 0x09: case 0x11: case 0x12: size = 8; break;
        case 0x02: case 0x0D: case 0x0E: size = 4 + bj_u32(b + pos); break;
        case 0x03: case 0x04: case 0x0F: size = bj_u32(b + pos); break;
        case 0x05: size = 5 + bj_u32(b + pos); break;
        case 0x07: size = 12; break;
        case 0x08: size = 1; break;
        case 0x0B: {
            size_t p = strlen((const char *)b + pos) + 1;
            size = p + strlen((const char *)b + pos + p) + 1;
            break;
        }
        case 0x0C: size = 4 + bj_u32(b + pos) + 12; break;
        case 0x10: size = 4; break;
        case 0x13: size = 16; break;
        default: size = 0; /* null, undefined, MinKey, MaxKey */
        }
        pos += size;
    }
    return 0;
}

/* A name-or-null field of ns as text offsets; a reason if it is anything else. */
static int bj_ns_field(bj_walker *w, size_t ns, const char *name, int64_t *off, int64_t *len) {
    uint8_t type;
    size_t value;
    *off = *len = -1;
    if (!bj_find(w, ns, name, strlen(name), &type, &value)) return 0;
    if (type == 0x0A || type == 0x06) return 0;
    if (!bj_is_text(type)) {
        w->ev->status = BJ_REJECT;
        snprintf(w->ev->reason, sizeof w->ev->reason,
                 "'ns.%s' must be a string, got BSON type 0x%02x", name, type);
        return -1;
    }
    if (type == 0x0F) value += 4;
    *off = (int64_t)value + 4;
    *len = (int64_t)bj_u32(w->b + value) - 1;
    return 0;
}

static int bj_reject_text(bj_walker *w, const char *text) {
    w->ev->status = BJ_REJECT;
    snprintf(w->ev->reason, sizeof w->ev->reason, "%s", text);
    return -1;
}

/* Whether pymongo decodes the validated document at `at` as a DBRef. */
static int bj_looks_dbref(bj_walker *w, size_t at) {
    uint8_t t;
    size_t v;
    if (!bj_find(w, at, "$ref", 4, &t, &v) || !bj_is_text(t)) return 0;
    if (!bj_find(w, at, "$id", 3, &t, &v)) return 0;
    if (bj_find(w, at, "$db", 3, &t, &v) && !bj_is_text(t) && t != 0x0A && t != 0x06) return 0;
    return 1;
}

#define BJ_MIN_SECONDS INT64_C(-62135596800)
#define BJ_MAX_SECONDS INT64_C(253402300799)

/* An integer-like value (int32, int64, bool) as Python's isinstance(x, int) sees it. */
static int bj_int_like(const uint8_t *b, uint8_t type, size_t value, int64_t *out) {
    if (type == 0x10) *out = (int32_t)bj_u32(b + value);
    else if (type == 0x12) *out = (int64_t)bj_u64(b + value);
    else if (type == 0x08) *out = b[value];
    else return 0;
    return 1;
}

/* clusterTime: a Timestamp, a datetime, or Extended JSON {"$timestamp": {"t", "i"}}. */
static int bj_cluster_time(bj_walker *w, uint8_t type, size_t value) {
    bj_event *ev = w->ev;
    const uint8_t *b = w->b;
    if (type == 0x0A || type == 0x06) return 0;
    if (type == 0x11) {
        ev->has_cluster_time = 1;
        ev->cluster_ms = (int64_t)bj_u32(b + value + 4) * 1000;
        ev->has_cluster_inc = 1;
        ev->cluster_inc = bj_u32(b + value);
        return 0;
    }
    if (type == 0x09) {
        int64_t ms = (int64_t)bj_u64(b + value);
        if (ms < BJ_MIN_MS || ms > BJ_MAX_MS)
            return bj_reject_text(w, "'clusterTime' must be a BSON Timestamp or datetime, got a "
                                     "datetime outside Python's range");
        ev->has_cluster_time = 1;
        ev->cluster_ms = ms;
        return 0;
    }
    if (type == 0x03) {
        uint8_t t_type;
        size_t inner;
        if (bj_find(w, value, "$timestamp", 10, &t_type, &inner) && t_type == 0x03 &&
            !bj_looks_dbref(w, inner)) {
            uint8_t s_type, i_type;
            size_t s_at, i_at;
            int64_t seconds, increment;
            if (bj_find(w, inner, "t", 1, &s_type, &s_at) && bj_int_like(b, s_type, s_at, &seconds)) {
                if (seconds < BJ_MIN_SECONDS || seconds > BJ_MAX_SECONDS)
                    return bj_reject_text(w, "'clusterTime' is out of range: year is out of range");
                ev->has_cluster_time = 1;
                ev->cluster_ms = seconds * 1000;
                if (bj_find(w, inner, "i", 1, &i_type, &i_at) && bj_int_like(b, i_type, i_at, &increment))
                    ev->has_cluster_inc = 1, ev->cluster_inc = increment;
                return 0;
            }
        }
    }
    return bj_reject_text(w, "'clusterTime' must be a BSON Timestamp or datetime");
}

/* After a JSON field is written: how each of its doubles is to be spelled. The dict
 * path hands a document holding a non-finite double (outside a DBRef, where its scan
 * does not look) to the json module, which spells every double as float.__repr__. */
static void bj_finish_floats(bj_event *ev, size_t base) {
    int exact = 0;
    for (size_t f = base; f < ev->nfloats; f++)
        if (!isfinite(ev->floats[f].value) && !ev->floats[f].in_dbref) exact = 1;
    for (size_t f = base; f < ev->nfloats; f++) {
        bj_float *x = &ev->floats[f];
        if (isfinite(x->value)) x->mode = exact ? BJ_FLOAT_REPR : BJ_FLOAT_ORJSON;
        else x->mode = exact || !x->in_dbref ? BJ_FLOAT_EXTJSON : BJ_FLOAT_NULL;
    }
}

static int bj_cmp_float(const void *a, const void *b) {
    size_t x = ((const bj_float *)a)->pos, y = ((const bj_float *)b)->pos;
    return x < y ? -1 : x > y;
}

/* The name of the Python type pymongo decodes a value of `type` to (a null is
 * never asked for, and a DBRef-shaped document has fallen back by then). */
static const char *bj_type_name(const uint8_t *b, uint8_t type, size_t value) {
    switch (type) {
    case 0x01: return "float";
    case 0x02: case 0x0E: return "str";
    case 0x03: return "dict";
    case 0x04: return "list";
    case 0x05: return b[value + 4] == 0 ? "bytes" : "Binary";
    case 0x07: return "ObjectId";
    case 0x08: return "bool";
    case 0x09: return "datetime";
    case 0x0B: return "Regex";
    case 0x0C: return "DBRef";
    case 0x0D: case 0x0F: return "Code";
    case 0x10: return "int";
    case 0x11: return "Timestamp";
    case 0x12: return "Int64";
    case 0x13: return "Decimal128";
    case 0x7F: return "MaxKey";
    case 0xFF: return "MinKey";
    default: return "NoneType";
    }
}

/* wallTime: a BSON date within datetime's range, or null. */
static int bj_wall_time(bj_walker *w, uint8_t type, size_t value) {
    bj_event *ev = w->ev;
    if (type == 0x0A || type == 0x06) return 0;
    if (type != 0x09) {
        ev->status = BJ_REJECT;
        snprintf(ev->reason, sizeof ev->reason, "'wallTime' must be a BSON date, got %s",
                 bj_type_name(w->b, type, value));
        return -1;
    }
    int64_t ms = (int64_t)bj_u64(w->b + value);
    if (ms < BJ_MIN_MS || ms > BJ_MAX_MS) return bj_reject_text(w, "'wallTime' is out of range: year outside 1..9999");
    ev->has_wall_time = 1;
    ev->wall_ms = ms;
    return 0;
}

/* The value at `at` written where the walk meets it, as "key":value with a key, and
 * its place recorded in `piece` for bj_compose. */
static int bj_walk_piece(bj_walker *w, uint8_t type, size_t at, size_t stop, const uint8_t *key,
                         size_t key_len, bj_piece *piece, size_t *next) {
    bj_event *ev = w->ev;
    piece->start = ev->out_len;
    piece->first = ev->nfloats;
    w->floats_moved = 0;
    if (key) {
        if (bj_text(w, key, key_len, "element name")) return -1;
        BJ_CH(w, ':');
    }
    if (bj_value(w, type, at, stop, 1, next)) return -1;
    piece->end = ev->out_len;
    piece->last = ev->nfloats;
    piece->moved = w->floats_moved;
    return 0;
}

/* Room for one more extra piece; the array moves only here, never during a walk. */
static int bj_extra_slot(bj_walker *w) {
    if (w->nextra < w->extra_cap) return 0;
    size_t cap = w->extra_cap ? w->extra_cap * 2 : 8;
    if (cap > SIZE_MAX / sizeof(bj_piece)) return bj_nomem(w);
    bj_piece *p = (bj_piece *)realloc(w->extra, cap * sizeof *p);
    if (!p) return bj_nomem(w);
    w->extra = p;
    w->extra_cap = cap;
    return 0;
}

/* Copies a piece's text to the end of the output, its doubles moved along with it. */
static int bj_copy_piece(bj_walker *w, const bj_piece *piece) {
    bj_event *ev = w->ev;
    size_t len = piece->end - piece->start, n = piece->last - piece->first;
    if (bj_reserve(w, len) || bj_reserve_floats(w, n)) return -1;
    size_t to = ev->out_len;
    memcpy(ev->out + to, ev->out + piece->start, len); /* the piece lies below out_len */
    for (size_t i = 0; i < n; i++) {
        bj_float f = ev->floats[piece->first + i];
        f.pos = f.pos - piece->start + to;
        ev->floats[ev->nfloats++] = f;
    }
    ev->out_len += len;
    return 0;
}

/* The JSON object of the present pieces, in the given order, at the end of the output
 * as field `field`; with `labels`, each piece is the value of its label's key. No
 * piece present: the field stays None. Its doubles are spelled as one dumps() call of
 * the whole object spells them. */
static int bj_compose(bj_walker *w, int field, const bj_piece *pieces, size_t n,
                      const char *const *labels) {
    bj_event *ev = w->ev;
    size_t start = ev->out_len, float_base = ev->nfloats;
    int moved = 0, first = 1;
    BJ_CH(w, '{');
    for (size_t i = 0; i < n; i++) {
        if (pieces[i].start == SIZE_MAX) continue;
        if (!first) BJ_CH(w, ',');
        first = 0;
        if (labels) BJ_PUT(w, labels[i], strlen(labels[i]));
        if (bj_copy_piece(w, &pieces[i])) return -1;
        moved |= pieces[i].moved;
    }
    if (first) {
        ev->out_len = start;
        return 0;
    }
    BJ_CH(w, '}');
    ev->field_start[field] = (int64_t)start;
    ev->field_end[field] = (int64_t)ev->out_len;
    ev->field_floats[field][0] = float_base;
    ev->field_floats[field][1] = ev->nfloats;
    bj_finish_floats(ev, float_base);
    if (moved)
        qsort(ev->floats + float_base, ev->nfloats - float_base, sizeof(bj_float), bj_cmp_float);
    return 0;
}

static const char *const BJ_TXN_LABELS[2] = {"\"txnNumber\":", "\"lsid\":"};

/* One whole event. Fills w->ev; returns its status. */
static int bj_walk_event(bj_walker *w, const uint8_t *b, size_t size) {
    bj_event *ev = w->ev;
    w->b = b;
    w->size = size;
    w->quiet = 0;
    w->floats_moved = 0;
    w->nelems = 0;
    w->txn[0].start = w->txn[1].start = SIZE_MAX;
    w->nextra = 0;
    ev->status = BJ_OK;
    ev->reason[0] = 0;
    ev->op_off = ev->db_off = ev->coll_off = -1;
    ev->op_len = ev->db_len = ev->coll_len = -1;
    ev->has_cluster_time = 0;
    ev->cluster_ms = 0;
    ev->has_cluster_inc = 0;
    ev->cluster_inc = 0;
    ev->has_wall_time = 0;
    ev->wall_ms = 0;
    ev->span_start = ev->span_end = -1;
    ev->head_start = ev->head_end = -1;
    ev->mid_start = ev->mid_end = -1;
    ev->out_len = 0;
    ev->nfloats = 0;
    for (int i = 0; i < BJ_NFIELDS; i++) {
        ev->field_start[i] = ev->field_end[i] = -1;
        ev->field_floats[i][0] = ev->field_floats[i][1] = 0;
    }

    if (size < 5) return bj_reject(w, 0, "fewer than 5 bytes"), ev->status;
    uint32_t declared = bj_u32(b);
    if (declared != size) return bj_reject(w, 0, "document length differs from the input's"), ev->status;
    if (b[size - 1] != 0) return bj_reject(w, size - 1, "document without its terminating NUL"), ev->status;

    int64_t ns_at = -1;
    uint8_t ns_type = 0;
    int64_t ct_at = -1;
    uint8_t ct_type = 0;
    int64_t wt_at = -1;
    uint8_t wt_type = 0;
    size_t pos = 4, stop = size - 1;
    while (pos < stop) {
        uint8_t type = b[pos++];
        const uint8_t *nul = (const uint8_t *)memchr(b + pos, 0, stop - pos);
        if (!nul) return bj_reject(w, pos, "element name without its NUL"), ev->status;
        size_t key_len = (size_t)(nul - (b + pos));
        const uint8_t *key = b + pos;
        if (bj_check_utf8(w, key, key_len, "element name")) return ev->status;
        if (bj_push_elem(w, key, key_len, type, 0)) return ev->status;
        pos += key_len + 1;
        const bj_top *top = NULL;
        for (size_t i = 0; i < BJ_NTOP; i++) {
            if (BJ_TOP_FIELDS[i].len == key_len && !memcmp(BJ_TOP_FIELDS[i].name, key, key_len)) {
                top = &BJ_TOP_FIELDS[i];
                break;
            }
        }
        size_t out_mark = ev->out_len, float_mark = ev->nfloats, elem_mark = w->nelems;
        size_t next;
        int rc;
        if (!top) {
            /* Not a column of its own: "key":value in the extra object, nulls too. */
            if (bj_extra_slot(w)) return ev->status;
            if (bj_walk_piece(w, type, pos, stop, key, key_len, &w->extra[w->nextra], &next))
                return ev->status;
            w->nextra++;
        } else if (top->kind == BJ_TOP_TXN) {
            bj_piece *piece = &w->txn[top->field];
            if (bj_walk_piece(w, type, pos, stop, NULL, 0, piece, &next)) return ev->status;
            if (type == 0x0A || type == 0x06) {
                piece->start = SIZE_MAX; /* null: left out of the transaction */
                ev->out_len = out_mark;
            }
        } else if (top->kind == BJ_TOP_JSON) {
            w->floats_moved = 0;
            if (type == 0x03 || type == 0x04)
                rc = bj_doc(w, pos, stop, 2, type == 0x04, NULL), next = rc ? 0 : pos + bj_u32(b + pos);
            else
                rc = bj_value(w, type, pos, stop, 1, &next);
            if (rc) return ev->status;
            if (type == 0x0A || type == 0x06) {
                ev->out_len = out_mark; /* null: the field is None */
            } else {
                ev->field_start[top->field] = (int64_t)out_mark;
                ev->field_end[top->field] = (int64_t)ev->out_len;
                ev->field_floats[top->field][0] = float_mark;
                ev->field_floats[top->field][1] = ev->nfloats;
                bj_finish_floats(ev, float_mark);
                if (w->floats_moved)
                    qsort(ev->floats + float_mark, ev->nfloats - float_mark, sizeof(bj_float), bj_cmp_float);
            }
            if (top->field == BJ_FIELD_TOKEN) {
                if (type == 0x03) ev->span_start = (int64_t)pos, ev->span_end = (int64_t)next;
            }
        } else {
            int is_dbref = 0;
            if (type == 0x03 || type == 0x04)
                rc = bj_doc(w, pos, stop, 2, type == 0x04, &is_dbref), next = rc ? 0 : pos + bj_u32(b + pos);
            else
                rc = bj_value(w, type, pos, stop, 1, &next);
            if (rc) return ev->status;
            ev->out_len = out_mark;
            ev->nfloats = float_mark;
            if (is_dbref) return bj_fallback(w), ev->status; /* not a mapping to pymongo */
            if (top->kind == BJ_TOP_OPERATION) {
                ev->op_off = -1;
                if (bj_is_text(type)) {
                    size_t s = type == 0x0F ? pos + 4 : pos;
                    ev->op_off = (int64_t)s + 4;
                    ev->op_len = (int64_t)bj_u32(b + s) - 1;
                }
            } else if (top->kind == BJ_TOP_NS) {
                ns_at = (int64_t)pos;
                ns_type = type;
            } else if (top->kind == BJ_TOP_CLUSTER_TIME) {
                ct_at = (int64_t)pos;
                ct_type = type;
            } else if (top->kind == BJ_TOP_WALL_TIME) {
                wt_at = (int64_t)pos;
                wt_type = type;
            }
        }
        w->nelems = elem_mark;
        pos = next;
    }
    int repeat = bj_has_repeat(w, w->elems, w->nelems);
    if (repeat < 0) return ev->status;
    if (repeat) return bj_fallback(w), ev->status;

    if (ev->op_off < 0 || ev->op_len <= 0)
        return bj_reject_text(w, "not a change-stream document: 'operationType' is missing or not a string"),
               ev->status;
    if (ns_at >= 0 && ns_type != 0x0A && ns_type != 0x06) {
        if (ns_type != 0x03) return bj_fallback(w), ev->status; /* Python truthiness decides */
        if (bj_ns_field(w, (size_t)ns_at, "db", &ev->db_off, &ev->db_len)) return ev->status;
        if (bj_ns_field(w, (size_t)ns_at, "coll", &ev->coll_off, &ev->coll_len)) return ev->status;
    }
    if (ct_at >= 0 && bj_cluster_time(w, ct_type, (size_t)ct_at)) return ev->status;
    if (wt_at >= 0 && bj_wall_time(w, wt_type, (size_t)wt_at)) return ev->status;
    if (bj_compose(w, BJ_FIELD_TRANSACTION, w->txn, 2, BJ_TXN_LABELS)) return ev->status;
    if (bj_compose(w, BJ_FIELD_EXTRA, w->extra, w->nextra, NULL)) return ev->status;
    return ev->status;
}

/* After a successful walk: the start of the event's JSON Lines row, as orjson writes
 * {"operation":..,"database":..,"collection":..,"cluster_time":.. (no closing brace;
 * the documents follow), and its middle, ,"wall_time":..,"cluster_time_increment":..
 * (between the pre-image and the transaction). The texts were checked by the walk. */
static int bj_jsonl_head(bj_walker *w) {
    bj_event *ev = w->ev;
    ev->head_start = (int64_t)ev->out_len;
    BJ_LIT(w, "{\"operation\":");
    if (bj_text(w, w->b + ev->op_off, (size_t)ev->op_len, "operationType")) return -1;
    BJ_LIT(w, ",\"database\":");
    if (ev->db_off < 0) BJ_LIT(w, "null");
    else if (bj_text(w, w->b + ev->db_off, (size_t)ev->db_len, "ns.db")) return -1;
    BJ_LIT(w, ",\"collection\":");
    if (ev->coll_off < 0) BJ_LIT(w, "null");
    else if (bj_text(w, w->b + ev->coll_off, (size_t)ev->coll_len, "ns.coll")) return -1;
    BJ_LIT(w, ",\"cluster_time\":");
    if (!ev->has_cluster_time) BJ_LIT(w, "null");
    else if (bj_datetime(w, ev->cluster_ms)) return -1;
    ev->head_end = (int64_t)ev->out_len;
    ev->mid_start = (int64_t)ev->out_len;
    BJ_LIT(w, ",\"wall_time\":");
    if (!ev->has_wall_time) BJ_LIT(w, "null");
    else if (bj_datetime(w, ev->wall_ms)) return -1;
    BJ_LIT(w, ",\"cluster_time_increment\":");
    if (!ev->has_cluster_inc) BJ_LIT(w, "null");
    else if (bj_int(w, ev->cluster_inc)) return -1;
    ev->mid_end = (int64_t)ev->out_len;
    return 0;
}

static void bj_event_free(bj_event *ev) {
    free(ev->out);
    free(ev->floats);
    ev->out = NULL;
    ev->floats = NULL;
    ev->out_cap = ev->floats_cap = 0;
}

static void bj_walker_free(bj_walker *w) {
    free(w->elems);
    free(w->extra);
    w->elems = NULL;
    w->extra = NULL;
    w->elems_cap = w->extra_cap = 0;
}

#endif
