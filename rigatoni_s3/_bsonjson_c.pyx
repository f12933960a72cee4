# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Raw BSON change events to our JSON, compiled: the walk runs without the GIL.

With the GIL, the batch's buffers are pinned; without it, each event is checked and
its documents written as JSON into C buffers (``_bsonjson_walk.h``); with the GIL
again, doubles are formatted by one orjson call for the whole batch (or by
float.__repr__ in the rare field the dict path hands to the json module), spliced in,
and the results built. The output equals :mod:`rigatoni_s3._bsonjson_py`'s byte for byte;
an event whose JSON would hang on Python dict semantics (a repeated key) or an odd
envelope shape goes through that module instead.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.datetime cimport datetime_new, import_datetime
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset

import datetime as _datetime

import orjson

from rigatoni_s3 import _bsonjson_py, _bsonpath
from rigatoni_s3._bsonjson_py import MAX_DEPTH, RawEnvelope


cdef extern from "Python.h":
    PyObject *PyType_GenericAlloc(PyTypeObject *type, Py_ssize_t nitems) except NULL


cdef extern from *:
    """
    static int bj_generic_alloc(PyTypeObject *type) { return type->tp_alloc == PyType_GenericAlloc; }
    """
    int bj_generic_alloc(PyTypeObject *type)


cdef extern from *:
    """
    #include <string.h>
    /* Whether a document's bytes hold "splitEvent", the mark of a fragment: each 'E' found
       by memchr is checked in place (a rarer byte than the first, 's'). */
    static int bj_holds_split_mark(const uint8_t *p, size_t n) {
        static const char mark[] = "splitEvent";
        const size_t m = sizeof(mark) - 1, at = 5;  /* mark[at] == 'E' */
        const uint8_t *end = p + n, *from = p + at, *hit;
        if (n < m) return 0;
        while (from < end - (m - at - 1)) {
            hit = (const uint8_t *)memchr(from, 'E', (size_t)(end - (m - at - 1) - from));
            if (hit == NULL) return 0;
            if (memcmp(hit - at, mark, m) == 0) return 1;
            from = hit + 1;
        }
        return 0;
    }
    """
    int bj_holds_split_mark(const uint8_t *p, size_t n) nogil


cdef extern from "_bsonjson_walk.h" nogil:
    int BJ_OK
    int BJ_REJECT
    int BJ_FALLBACK
    int BJ_NOMEM
    int BJ_FLOAT_ORJSON
    int BJ_FLOAT_REPR
    int BJ_FLOAT_NULL
    int BJ_FLOAT_EXTJSON
    int BJ_MAX_DEPTH
    int BJ_NFIELDS

    ctypedef struct bj_float:
        size_t pos
        double value
        int mode

    ctypedef struct bj_elem:
        pass

    ctypedef struct bj_event:
        int status
        char reason[192]
        int64_t op_off, op_len
        int64_t db_off, db_len
        int64_t coll_off, coll_len
        int has_cluster_time
        int64_t cluster_ms
        int has_cluster_inc
        int64_t cluster_inc
        int has_wall_time
        int64_t wall_ms
        int64_t field_start[7]
        int64_t field_end[7]
        size_t field_floats[7][2]
        int64_t span_start, span_end
        int64_t head_start, head_end
        int64_t mid_start, mid_end
        uint8_t *out
        bj_float *floats

    ctypedef struct bj_walker:
        bj_event *ev
        bj_elem *elems

    int BJ_DECIMAL128_TEXT
    size_t bj_decimal128_text(const uint8_t *p, char *out)
    int bj_walk_event(bj_walker *w, const uint8_t *b, size_t size)
    int bj_jsonl_head(bj_walker *w)
    void bj_event_free(bj_event *ev)
    void bj_walker_free(bj_walker *w)


assert MAX_DEPTH == BJ_MAX_DEPTH
assert BJ_NFIELDS == 7  # the size of the field arrays declared above

cdef bytes _NAN = b'{"$numberDouble":"NaN"}'
cdef bytes _INF = b'{"$numberDouble":"Infinity"}'
cdef bytes _NEG_INF = b'{"$numberDouble":"-Infinity"}'
cdef object _float_repr = float.__repr__
import_datetime()
cdef object _UTC = _datetime.timezone.utc
cdef PyTypeObject *_ENVELOPE = <PyTypeObject *>RawEnvelope
assert bj_generic_alloc(_ENVELOPE)  # what _envelope relies on


cdef inline void _put(object envelope, Py_ssize_t i, object value):
    Py_INCREF(value)  # PyTuple_SET_ITEM takes the reference over
    PyTuple_SET_ITEM(envelope, i, value)


cdef object _envelope(bj_event *ev, const uint8_t *b, const char *text, size_t *cuts, Py_ssize_t *next_text):
    """A RawEnvelope built as tuple.__new__ builds a tuple subclass, minus the calls."""
    envelope = <object>PyType_GenericAlloc(_ENVELOPE, 15)
    Py_DECREF(envelope)  # the cast took a second reference to the new object
    _put(envelope, 0, _text(b, ev.op_off, ev.op_len))
    _put(envelope, 1, _text(b, ev.db_off, ev.db_len))
    _put(envelope, 2, _text(b, ev.coll_off, ev.coll_len))
    _put(envelope, 3, ev.cluster_ms if ev.has_cluster_time else None)
    _put(envelope, 4, ev.cluster_inc if ev.has_cluster_inc else None)
    # In slot order, the order the batch's doubles were listed in.
    fields = [_field(ev, k, text, cuts, next_text) for k in range(BJ_NFIELDS)]
    for k in range(5):  # document_key .. full_document_before_change
        _put(envelope, 5 + k, fields[k])
    _put(envelope, 10, ev.wall_ms if ev.has_wall_time else None)
    _put(envelope, 11, fields[5])  # transaction
    _put(envelope, 12, fields[6])  # extra
    _put(envelope, 13, (ev.span_start, ev.span_end) if ev.span_start >= 0 else None)
    _put(envelope, 14, _line(ev, fields) if ev.head_start >= 0 else None)
    return envelope


# The row's keys before each JSON field, in slot order; the walk's middle part
# (wall_time, cluster_time_increment) goes before the transaction.
cdef tuple _LABELS = (
    b',"document_key":',
    b',"full_document":',
    b',"update_description":',
    b',"resume_token":',
    b',"full_document_before_change":',
    b',"transaction":',
    b',"extra":',
)
cdef bytes _NULL = b"null"


cdef object _line(
    bj_event *ev, list fields, const char *text=NULL, size_t *cuts=NULL,
    Py_ssize_t *next_text=NULL,
):
    """The event's JSON Lines row: the head the walk wrote, the documents, the middle
    the walk wrote, then the transaction and the extra fields. The documents are
    ``fields`` (each one's bytes, or None), or without it the walk's own text with the
    doubles spliced in (see :func:`_piece`)."""
    cdef Py_ssize_t size = ev.head_end - ev.head_start + ev.mid_end - ev.mid_start + 1
    cdef Py_ssize_t t = next_text[0] if next_text != NULL else 0
    cdef int k
    for k in range(BJ_NFIELDS):
        size += PyBytes_GET_SIZE(_LABELS[k]) + _piece(ev, fields, k, cuts, &t, NULL, NULL)
    result = PyBytes_FromStringAndSize(NULL, size)
    cdef char *o = PyBytes_AS_STRING(result)
    cdef bytes label
    t = next_text[0] if next_text != NULL else 0
    memcpy(o, ev.out + ev.head_start, ev.head_end - ev.head_start)
    o += ev.head_end - ev.head_start
    for k in range(BJ_NFIELDS):
        if k == 5:
            memcpy(o, ev.out + ev.mid_start, ev.mid_end - ev.mid_start)
            o += ev.mid_end - ev.mid_start
        label = _LABELS[k]
        memcpy(o, PyBytes_AS_STRING(label), PyBytes_GET_SIZE(label))
        o += PyBytes_GET_SIZE(label)
        o += _piece(ev, fields, k, cuts, &t, text, o)
    o[0] = b'}'
    if next_text != NULL:
        next_text[0] = t
    return result


cdef Py_ssize_t _piece(
    bj_event *ev, list fields, int k, size_t *cuts, Py_ssize_t *t, const char *text, char *o
):
    """The length of the k-th document's JSON (``null`` when absent), written to ``o``
    unless it is NULL. The bytes come from ``fields``, the walk, or this module. The
    walk left an empty place for each double: a finite one takes the next text of the
    batch's orjson ``text`` (the n-th lies between ``cuts[n] + 1`` and ``cuts[n + 1]``,
    and ``t`` moves past it), any other one the text :func:`_special` gives it."""
    cdef const char *source
    cdef Py_ssize_t length
    cdef size_t f, done, gap
    if fields is not None or ev.field_start[k] < 0:
        part = _NULL if fields is None or fields[k] is None else fields[k]
        length = PyBytes_GET_SIZE(part)
        if o != NULL:
            memcpy(o, PyBytes_AS_STRING(part), length)
        return length
    done = <size_t>ev.field_start[k]  # the walk's text up to here is written
    length = 0
    for f in range(ev.field_floats[k][0], ev.field_floats[k][1]):
        if ev.floats[f].mode == BJ_FLOAT_ORJSON:
            source = text + cuts[t[0]] + 1
            gap = cuts[t[0] + 1] - cuts[t[0]] - 1
            t[0] += 1
        else:  # rare: made again for the writing pass
            special = _special(&ev.floats[f])
            source = PyBytes_AS_STRING(special)
            gap = <size_t>PyBytes_GET_SIZE(special)
        if o != NULL:
            memcpy(o + length, ev.out + done, ev.floats[f].pos - done)
            memcpy(o + length + ev.floats[f].pos - done, source, gap)
        length += ev.floats[f].pos - done + gap
        done = ev.floats[f].pos
    if o != NULL:
        memcpy(o + length, ev.out + done, <size_t>ev.field_end[k] - done)
    return length + <size_t>ev.field_end[k] - done


cdef object _text(const uint8_t *b, int64_t off, int64_t length):
    if off < 0:
        return None
    return PyUnicode_DecodeUTF8(<const char *>b + off, length, NULL)


cdef object _pin(object document, Py_buffer *view, const uint8_t **ptr, size_t *size, char *pinned):
    """Points ``ptr`` at the document's bytes; a reason string if it has none."""
    if isinstance(document, bytes):
        ptr[0] = <const uint8_t *>PyBytes_AS_STRING(document)
        size[0] = <size_t>PyBytes_GET_SIZE(document)
        return None
    if isinstance(document, (bytearray, memoryview)):
        try:
            PyObject_GetBuffer(document, view, PyBUF_SIMPLE)
        except (BufferError, TypeError, ValueError) as exc:
            return f"not a contiguous byte buffer: {exc}"
        pinned[0] = 1
        ptr[0] = <const uint8_t *>view.buf
        size[0] = <size_t>view.len
        return None
    raw = getattr(document, "raw", None)
    if isinstance(raw, bytes):
        ptr[0] = <const uint8_t *>PyBytes_AS_STRING(raw)
        size[0] = <size_t>PyBytes_GET_SIZE(raw)
        return raw  # the caller keeps it alive
    return f"expected BSON bytes or a RawBSONDocument, got {type(document).__name__}"


cdef class _Pinned:
    """A batch's documents held still while the GIL is released: each one's bytes as a
    pointer and a size, NULL where it has none (``reasons`` says why). The buffers are
    released when the object goes."""

    cdef Py_ssize_t n
    cdef Py_buffer *views
    cdef char *pinned
    cdef const uint8_t **ptrs
    cdef size_t *sizes
    cdef list keep  # RawBSONDocument bytes the pointers point into
    cdef list reasons

    def __cinit__(self, list docs):
        cdef Py_ssize_t i
        self.n = len(docs)
        self.views = <Py_buffer *>calloc(self.n + 1, sizeof(Py_buffer))
        self.pinned = <char *>calloc(self.n + 1, 1)
        self.ptrs = <const uint8_t **>calloc(self.n + 1, sizeof(uint8_t *))
        self.sizes = <size_t *>calloc(self.n + 1, sizeof(size_t))
        if not (self.views and self.pinned and self.ptrs and self.sizes):
            raise MemoryError
        self.keep = [None] * self.n
        self.reasons = [None] * self.n
        for i in range(self.n):
            reason = _pin(docs[i], &self.views[i], &self.ptrs[i], &self.sizes[i], &self.pinned[i])
            if isinstance(reason, str):
                self.reasons[i] = reason
                self.ptrs[i] = NULL
            else:
                self.keep[i] = reason

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.pinned != NULL:
            for i in range(self.n):
                if self.pinned[i]:
                    PyBuffer_Release(&self.views[i])
        free(self.views)
        free(self.pinned)
        free(self.ptrs)
        free(self.sizes)


cdef object _special(bj_float *f):
    """The text of a double the batch's orjson call does not format."""
    v = f.value
    if f.mode == BJ_FLOAT_REPR:
        return _float_repr(v).encode()
    if f.mode == BJ_FLOAT_NULL:
        return b"null"
    if v != v:
        return _NAN
    return _INF if v > 0 else _NEG_INF


cdef object _field(bj_event *ev, int k, const char *text, size_t *cuts, Py_ssize_t *next_text):
    """One JSON field's bytes, with its doubles' text spliced in (see :func:`_piece`);
    None when the event has no such field."""
    if ev.field_start[k] < 0:
        return None
    cdef Py_ssize_t t = next_text[0]
    result = PyBytes_FromStringAndSize(NULL, _piece(ev, None, k, cuts, &t, NULL, NULL))
    t = next_text[0]
    _piece(ev, None, k, cuts, &t, text, PyBytes_AS_STRING(result))
    next_text[0] = t
    return result


def decimal128_str(value):
    """``str(value)`` of a ``bson.Decimal128``, from its 16 bytes: the text the walk
    writes for one, without the ``decimal.Decimal`` pymongo builds for it."""
    bid = getattr(value, "bid", None)
    cdef char out[80]
    cdef size_t n
    assert BJ_DECIMAL128_TEXT <= 80
    if not isinstance(bid, bytes) or PyBytes_GET_SIZE(bid) != 16:  # a lookalike class
        return str(value)
    n = bj_decimal128_text(<const uint8_t *>PyBytes_AS_STRING(bid), out)
    return PyUnicode_DecodeASCII(out + 1, <Py_ssize_t>n - 2, NULL)  # without the quotes


cdef object _NO_PARTITION = object()


def group_rows(partitions, rows, sizes):
    """The compiled twin of ``_bsonjson_py.group_rows``. Consecutive rows of one
    partition object are added without looking their group up again."""
    cdef list keys = partitions if type(partitions) is list else list(partitions)
    cdef list values = rows if type(rows) is list else list(rows)
    cdef list lengths = sizes if type(sizes) is list else list(sizes)
    cdef Py_ssize_t i, n = len(keys)
    cdef list into_rows = None, into_sizes = None
    if len(values) != n or len(lengths) != n:
        raise ValueError("partitions, rows and sizes must be as long as each other")
    groups = {}
    last = _NO_PARTITION
    for i in range(n):
        key = keys[i]
        if key is not last:
            group = groups.get(key)
            if group is None:
                group = ([], [])
                groups[key] = group
            into_rows, into_sizes = group
            last = key
        into_rows.append(values[i])
        into_sizes.append(lengths[i])
    return groups


def convert_batch(documents, lines=False):
    """Each document as a ``RawEnvelope``, or a reason it cannot be one; with ``lines``,
    each envelope also holds its JSON Lines row."""
    return _convert(documents, True, lines)


def _walk_only(documents):
    """Only the part of :func:`convert_batch` that runs without the GIL, for measuring:
    the documents are pinned, walked and checked, and nothing is built."""
    _convert(documents, False, False)


cdef class _Walk:
    """One batch walked: each event checked and its documents written as JSON into C
    buffers without the GIL, then the text of all the batch's finite doubles spelled by
    one orjson call. The buffers are freed when the object goes."""

    cdef list docs
    cdef Py_ssize_t n
    cdef _Pinned held
    cdef bj_event *events
    cdef bj_walker walker
    cdef bytes text
    cdef const char *text_ptr
    cdef size_t *cuts
    cdef Py_ssize_t next_text  # the next double of ``text`` to splice in, in walk order
    cdef bint may_split  # some document holds the bytes of ``SPLIT_MARK``

    def __cinit__(self, list docs, bint lines):
        cdef Py_ssize_t i
        cdef const uint8_t **ptrs
        cdef size_t *sizes
        memset(&self.walker, 0, sizeof(self.walker))
        self.docs = docs
        self.n = len(docs)
        self.held = _Pinned(docs)
        self.events = <bj_event *>calloc(self.n + 1, sizeof(bj_event))
        if not self.events:
            raise MemoryError
        ptrs = self.held.ptrs
        sizes = self.held.sizes
        with nogil:
            for i in range(self.n):
                if ptrs[i] != NULL:
                    if not self.may_split and bj_holds_split_mark(ptrs[i], sizes[i]):
                        self.may_split = True
                    self.walker.ev = &self.events[i]
                    if bj_walk_event(&self.walker, ptrs[i], sizes[i]) == BJ_OK and lines:
                        bj_jsonl_head(&self.walker)

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.events:
            for i in range(self.n):
                bj_event_free(&self.events[i])
        free(self.events)
        free(self.cuts)
        bj_walker_free(&self.walker)

    cdef int spell_doubles(self) except -1:
        """One orjson call spells every finite double of the batch: "[a,b,...]". The
        commas (and the brackets) cut it; no number's text holds one."""
        cdef Py_ssize_t i, at, count
        cdef int k
        cdef size_t f
        cdef bj_event *ev
        finite = []
        for i in range(self.n):
            ev = &self.events[i]
            if self.held.ptrs[i] == NULL or ev.status != BJ_OK:
                continue
            for k in range(BJ_NFIELDS):
                if ev.field_start[k] >= 0:
                    for f in range(ev.field_floats[k][0], ev.field_floats[k][1]):
                        if ev.floats[f].mode == BJ_FLOAT_ORJSON:
                            finite.append(ev.floats[f].value)
        self.text = orjson.dumps(finite) if finite else b"[]"
        self.text_ptr = PyBytes_AS_STRING(self.text)
        self.cuts = <size_t *>malloc((len(finite) + 1) * sizeof(size_t))
        if self.cuts == NULL:
            raise MemoryError
        count = 0
        for at in range(PyBytes_GET_SIZE(self.text)):
            if self.text_ptr[at] == b',' or self.text_ptr[at] == b'[' or self.text_ptr[at] == b']':
                self.cuts[count] = at
                count += 1
                if count > len(finite):
                    break
        return 0

    cdef object outcome(self, Py_ssize_t i, bint lines):
        """None for a walked event whose JSON is ready; otherwise what stands for it: a
        reason string (rejected), or the reference module's result (its JSON would hang
        on Python dict semantics, or its envelope has an odd shape)."""
        cdef bj_event *ev = &self.events[i]
        if self.held.ptrs[i] == NULL:
            return self.held.reasons[i]
        if ev.status == BJ_NOMEM:
            raise MemoryError
        if ev.status == BJ_REJECT:
            return ev.reason.decode("utf-8", "replace")
        if ev.status == BJ_FALLBACK:
            return _bsonjson_py.convert_one(self.docs[i], lines=lines)
        return None


cdef object _convert(documents, bint build, bint lines):
    cdef _Walk walk = _Walk(list(documents), lines)
    cdef Py_ssize_t i
    if not build:
        return None
    walk.spell_doubles()
    results: list = [None] * walk.n
    for i in range(walk.n):
        outcome = walk.outcome(i, lines)
        if outcome is not None:
            results[i] = outcome
        else:
            results[i] = _envelope(
                &walk.events[i], walk.held.ptrs[i], walk.text_ptr, walk.cuts, &walk.next_text
            )
    return results


cdef enum:
    _CACHED_KEYS = 8  # partition keys a batch of rows keeps at hand
    _BREAK_EVERY = 64  # events between two calls of a batch's GIL breaker


def lines_batch(documents, step, now_seconds, new_key, breaker=None):
    """JSON Lines rows and partitions of a batch: the compiled twin of
    ``_bsonjson_py.lines_batch``, building the rows and a key per partition only."""
    return _rows_batch(documents, step, now_seconds, new_key, None, breaker)


def envelopes_batch(documents, step, now_seconds, new_key, row_type, breaker=None):
    """Envelope rows and partitions of a batch: the compiled twin of
    ``_bsonjson_py.envelopes_batch``."""
    if (
        not isinstance(row_type, type)
        or not issubclass(row_type, tuple)
        or not bj_generic_alloc(<PyTypeObject *>row_type)
    ):
        raise TypeError("row_type must be a plain tuple subclass, such as a NamedTuple")
    return _rows_batch(documents, step, now_seconds, new_key, row_type, breaker)


cdef object _utc(int64_t ms):
    """Milliseconds since the epoch as an aware UTC datetime. The walk rejects events
    whose times lie beyond year 1 to 9999; past them, ``datetime_new`` would raise."""
    cdef int64_t seconds = ms / 1000
    cdef int64_t millis = ms % 1000
    if millis < 0:  # floored, as Python's divmod is
        seconds -= 1
        millis += 1000
    cdef int64_t days = seconds / 86400
    cdef int64_t rest = seconds % 86400
    if rest < 0:
        days -= 1
        rest += 86400
    # The civil date of a day count (days since 1970-01-01), in eras of 400 years.
    cdef int64_t z = days + 719468
    cdef int64_t era = (z if z >= 0 else z - 146096) / 146097
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
    cdef int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    cdef int64_t mp = (5 * doy + 2) / 153
    cdef int day = <int>(doy - (153 * mp + 2) / 5 + 1)
    cdef int month = <int>(mp + 3 if mp < 10 else mp - 9)
    cdef int year = <int>(yoe + era * 400 + (1 if month <= 2 else 0))
    return datetime_new(
        year, month, day, <int>(rest / 3600), <int>(rest / 60 % 60), <int>(rest % 60),
        <int>(millis * 1000), _UTC
    )


cdef class _Keys:
    """The partition keys a batch's events go to, the last few kept at hand by
    collection bytes and period, so that most events find theirs without Python."""

    cdef object new_key
    cdef int64_t step  # seconds per bucket; 0: one bucket
    cdef const uint8_t *at[_CACHED_KEYS]  # NULL: no collection
    cdef int64_t length[_CACHED_KEYS]
    cdef int64_t period[_CACHED_KEYS]
    cdef list keys
    cdef Py_ssize_t count
    cdef Py_ssize_t replace

    def __cinit__(self, new_key, step):
        self.new_key = new_key
        self.step = 0 if step is None else step
        if step is not None and self.step <= 0:
            raise ValueError("step must be a positive number of seconds, or None")
        self.keys = [None] * _CACHED_KEYS

    cdef object key(self, const uint8_t *b, bj_event *ev, int64_t now):
        cdef int64_t seconds, period = 0
        cdef Py_ssize_t c
        cdef const uint8_t *name = NULL if ev.coll_off < 0 else b + ev.coll_off
        if ev.has_cluster_time:
            seconds = ev.cluster_ms / 1000
            if ev.cluster_ms % 1000 < 0:  # floored, as Python's // is
                seconds -= 1
        else:
            seconds = now
        if self.step:
            period = seconds % self.step
            if period < 0:
                period += self.step
            period = seconds - period
        for c in range(self.count):
            if (
                self.length[c] == ev.coll_len
                and self.period[c] == period
                and (name == NULL) == (self.at[c] == NULL)
                and (name == NULL or memcmp(self.at[c], name, <size_t>ev.coll_len) == 0)
            ):
                return self.keys[c]
        key = self.new_key((_text(b, ev.coll_off, ev.coll_len), period if self.step else None))
        if self.count < _CACHED_KEYS:
            c = self.count
            self.count += 1
        else:
            c = self.replace
            self.replace = (self.replace + 1) % _CACHED_KEYS
        self.keys[c] = key
        self.at[c] = name
        self.length[c] = ev.coll_len
        self.period[c] = period
        return key


cdef object _rows_batch(documents, step, now_seconds, new_key, row_type, breaker):
    cdef bint lines = row_type is None
    cdef _Walk walk = _Walk(list(documents), lines)
    cdef _Keys keys = _Keys(new_key, step)
    cdef Py_ssize_t i, last = -1
    cdef int64_t now = now_seconds
    cdef int64_t last_start = 0, last_end = 0
    cdef bj_event *ev
    cdef const uint8_t *b
    positions = []
    partitions = []
    rows = []
    rejected = []
    walk.spell_doubles()
    for i in range(walk.n):
        if breaker is not None and i % _BREAK_EVERY == _BREAK_EVERY - 1:
            breaker()
        outcome = walk.outcome(i, lines)
        if isinstance(outcome, str):
            rejected.append((i, outcome))
            continue
        if outcome is not None:  # the reference module's envelope
            placed = _bsonjson_py.place(outcome, step, now_seconds, new_key, row_type)
            if isinstance(placed, str):
                rejected.append((i, placed))
                continue
            positions.append(i)
            partitions.append(placed[0])
            rows.append(placed[1])
            if outcome.resume_token_span is not None:
                last = i
                last_start, last_end = outcome.resume_token_span
            continue
        ev = &walk.events[i]
        b = walk.held.ptrs[i]
        if lines:
            row = _line(ev, None, walk.text_ptr, walk.cuts, &walk.next_text)
            key = keys.key(b, ev, now)
        else:  # its times fit a datetime: the walk rejects those that do not
            key = keys.key(b, ev, now)
            row = _envelope_row(ev, b, walk.text_ptr, walk.cuts, &walk.next_text, row_type, key)
        positions.append(i)
        partitions.append(key)
        rows.append(row)
        if ev.span_start >= 0:
            last = i
            last_start, last_end = ev.span_start, ev.span_end
    last_span = None if last < 0 else (last, (last_start, last_end))
    return _bsonjson_py.RowsBatch(
        positions, partitions, rows, rejected, last_span, walk.may_split
    )


cdef object _envelope_row(
    bj_event *ev, const uint8_t *b, const char *text, size_t *cuts, Py_ssize_t *next_text,
    object row_type, object key
):
    """An envelope row of ``row_type``, built as :func:`_envelope` builds a RawEnvelope;
    the collection's text is the partition key's (``key[0]``, a PartitionKey's)."""
    cdef int k
    row = <object>PyType_GenericAlloc(<PyTypeObject *>row_type, 13)
    Py_DECREF(row)  # the cast took a second reference to the new object
    _put(row, 0, _text(b, ev.op_off, ev.op_len))
    _put(row, 1, _text(b, ev.db_off, ev.db_len))
    _put(row, 2, key[0])
    _put(row, 3, _utc(ev.cluster_ms) if ev.has_cluster_time else None)
    for k in range(5):  # document_key .. full_document_before_change, in slot order
        _put(row, 4 + k, _field(ev, k, text, cuts, next_text))
    _put(row, 9, _utc(ev.wall_ms) if ev.has_wall_time else None)
    _put(row, 10, ev.cluster_inc if ev.has_cluster_inc else None)
    _put(row, 11, _field(ev, 5, text, cuts, next_text))  # transaction
    _put(row, 12, _field(ev, 6, text, cuts, next_text))  # extra
    return row


cdef extern from "_bsonpath_find.h" nogil:
    int BP_OK

    ctypedef struct bp_span:
        int kind
        int64_t start
        int64_t end

    ctypedef struct bp_node:
        const uint8_t *key
        size_t key_len
        int64_t position
        int first_child
        int nchildren
        int has_positions
        int first_end
        int nends

    ctypedef struct bp_tree:
        const bp_node *nodes
        const int *ends
        int npaths

    int bp_find(const bp_tree *t, const uint8_t *b, size_t size, bp_span *found, bp_span *last)


cdef class PathFinder:
    """The elements some paths lead to in raw BSON events, found without the GIL: the
    compiled twin of ``_bsonpath.PathTree``, giving the same spans."""

    cdef bp_tree tree
    cdef bp_node *nodes
    cdef int *ends
    cdef int nnodes
    cdef list keys  # the field names the nodes point into

    def __cinit__(self, paths):
        self.nodes = NULL
        self.ends = NULL
        self.keys = []
        # Each node: its name, then its children by name and the paths ending there.
        root = ({}, [])
        for number, path in enumerate(paths):
            node = root
            for name in path:
                node = node[0].setdefault(name, ({}, []))
            node[1].append(number)
        # Breadth first, so that the children of each node are numbered contiguously.
        order = [(None, root)]
        cdef Py_ssize_t at = 0
        while at < len(order):
            order.extend(order[at][1][0].items())
            at += 1
        self.nnodes = len(order)
        self.nodes = <bp_node *>calloc(self.nnodes, sizeof(bp_node))
        self.ends = <int *>calloc(len(paths) + 1, sizeof(int))
        if self.nodes == NULL or self.ends == NULL:
            raise MemoryError
        cdef int next_child = 1
        cdef int next_end = 0
        cdef bp_node *node_ptr
        for at in range(self.nnodes):
            name, (children, ending) = order[at]
            node_ptr = &self.nodes[at]
            if name is not None:
                key = name.encode("utf-8")
                self.keys.append(key)
                node_ptr.key = <const uint8_t *>PyBytes_AS_STRING(key)
                node_ptr.key_len = <size_t>PyBytes_GET_SIZE(key)
                index = _bsonpath.array_index(name)
                node_ptr.position = -1 if index is None else index
            else:
                node_ptr.position = -1
            node_ptr.first_child = next_child
            node_ptr.nchildren = len(children)
            node_ptr.has_positions = any(
                _bsonpath.array_index(child) is not None for child in children
            )
            next_child += len(children)
            node_ptr.first_end = next_end
            node_ptr.nends = len(ending)
            for number in ending:
                self.ends[next_end] = number
                next_end += 1
        self.tree.nodes = self.nodes
        self.tree.ends = self.ends
        self.tree.npaths = len(paths)

    def __dealloc__(self):
        free(self.nodes)
        free(self.ends)

    def spans_batch(self, documents):
        """For each document, where each path leads (``(type, start, end)`` or None),
        with the document's bytes; None instead where the bytes are not well formed
        (the Python walk says why)."""
        cdef list docs = list(documents)
        cdef Py_ssize_t n = len(docs)
        cdef int npaths = self.tree.npaths
        cdef Py_ssize_t i
        cdef int p
        cdef bp_span *span
        cdef _Pinned held = _Pinned(docs)
        cdef const uint8_t **ptrs = held.ptrs
        cdef size_t *sizes = held.sizes
        cdef int *status = <int *>calloc(n + 1, sizeof(int))
        cdef bp_span *found = <bp_span *>calloc(n * npaths + 1, sizeof(bp_span))
        cdef bp_span *last = <bp_span *>calloc(self.nnodes, sizeof(bp_span))
        results: list = [None] * n
        try:
            if not (status and found and last):
                raise MemoryError
            with nogil:
                for i in range(n):
                    if ptrs[i] != NULL:
                        status[i] = bp_find(&self.tree, ptrs[i], sizes[i], found + i * npaths, last)
            for i in range(n):
                if ptrs[i] == NULL or status[i] != BP_OK:
                    continue
                row = [None] * npaths
                for p in range(npaths):
                    span = &found[i * npaths + p]
                    if span.kind >= 0:
                        row[p] = (span.kind, span.start, span.end)
                results[i] = row
            return results
        finally:
            free(status)
            free(found)
            free(last)
