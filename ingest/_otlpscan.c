/* _otlpscan: the compiled protobuf wire scanner of OTLP span ingest (optional).
 *
 * ingest/otlp_columnar.py decodes the spans of many OTLP requests at once: the requests'
 * outer levels (ResourceSpans, ScopeSpans) are walked to find each span's bytes, and the
 * span fields are read by a wire scanner into arrays. That scanner exists twice: vectorised
 * with numpy (always available, upb walks the outer levels) and here, in plain C (built by
 * setup.py when a compiler is there; it also assembles the id hex, Arrow string views and
 * attributes JSON). Both fill the same arrays; tests/test_traces_scanner.py and
 * tests/test_traces_columnar.py check them against each other and against the per-span
 * reference reader, row for row. Python imports this module only if it was built.
 *
 * No numpy C API: every function reads bytes-like objects and writes into writable buffers
 * preallocated by the caller (numpy arrays passed through the buffer protocol). Every read
 * is bounds-checked against the buffer it reads: truncated or malicious input marks a row
 * "bad" (the caller hands that message to the per-span reader) and never reads outside.
 *
 * Functions:
 *   scan_requests(data, starts, ends, unusual, spans, resources, runs) -> counts
 *   scan_spans(data, starts, ends, cols, attrs) -> attribute count (negative: -needed)
 *   scan_keyvalues(data, offsets, cols) -> None
 *   binary_views(data, offsets, lengths, views) -> None
 *   hex_ids(data, offsets, lengths, size, chars) -> bytes written
 *   join_fragments(frag_offsets, frag_data, ids, counts, out_offsets, out_data) -> bytes written
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* scan_spans columns (int64, column-major: cols[c * n + i]) */
enum {
    C_TRACE_OFF, C_TRACE_LEN, C_SPAN_OFF, C_SPAN_LEN, C_PARENT_OFF, C_PARENT_LEN,
    C_NAME_OFF, C_NAME_LEN, C_KIND, C_START, C_END, C_CODE, C_MSG_OFF, C_MSG_LEN,
    C_STATUS_OFF, C_STATUS_LEN, C_FLAGS, N_SPAN_COLS
};
/* C_FLAGS bits */
#define F_BAD 1          /* the scanner could not walk the span, or met something unusual */
#define F_EVENTS 2       /* the span has events */
#define F_TRACE_NZ 4     /* the trace id holds a non-zero byte */
#define F_SPAN_NZ 8      /* the span id holds a non-zero byte */

/* scan_keyvalues columns: key offset/length, value offset/length (the string), int value, kind */
enum { K_KEY_OFF, K_KEY_LEN, K_VAL_OFF, K_VAL_LEN, K_INT, K_KIND, N_KV_COLS };
#define KV_SLOW 0
#define KV_STRING 1
#define KV_INT 2

#define MAX_FIELD 536870911u /* 2**29 - 1: larger field numbers do not parse */

typedef struct {
    uint32_t number;
    uint32_t wire;
    uint64_t value;   /* varint or fixed value */
    int64_t offset;   /* payload of a length-delimited field */
    int64_t length;
} Field;

/* A base-128 varint at *p (< end); 0 when malformed or truncated. */
static int read_varint(const uint8_t *data, int64_t *p, int64_t end, uint64_t *out)
{
    uint64_t value = 0;
    int shift = 0;
    while (*p < end && shift < 70) {
        uint8_t byte = data[*p];
        (*p)++;
        value |= (uint64_t)(byte & 0x7F) << (shift < 64 ? shift : 63);
        if (!(byte & 0x80)) {
            *out = value;
            return 1;
        }
        shift += 7;
    }
    return 0;
}

/* The next field at *p (< end); 0 when it cannot be walked (the numpy scanner's "bad"). */
static int next_field(const uint8_t *data, int64_t *p, int64_t end, Field *f)
{
    uint64_t tag;
    if (!read_varint(data, p, end, &tag) || tag < 8 || (tag >> 3) > MAX_FIELD)
        return 0;
    f->number = (uint32_t)(tag >> 3);
    f->wire = (uint32_t)(tag & 7);
    f->value = 0;
    f->offset = -1;
    f->length = 0;
    switch (f->wire) {
    case 0:
        return read_varint(data, p, end, &f->value);
    case 1:
    case 5: {
        int size = f->wire == 1 ? 8 : 4;
        if (end - *p < size)
            return 0;
        for (int k = size - 1; k >= 0; k--)
            f->value = (f->value << 8) | data[*p + k];
        *p += size;
        return 1;
    }
    case 2: {
        uint64_t size;
        if (!read_varint(data, p, end, &size) || size > (uint64_t)(end - *p))
            return 0;
        f->offset = *p;
        f->length = (int64_t)size;
        *p += (int64_t)size;
        return 1;
    }
    default: /* groups (3, 4) and undefined wire types (6, 7) */
        return 0;
    }
}

static int any_nonzero(const uint8_t *data, int64_t offset, int64_t length)
{
    for (int64_t k = 0; k < length; k++)
        if (data[offset + k])
            return 1;
    return 0;
}

/* Status.code (3, varint) and Status.message (2, bytes), each at most once. */
static int scan_status(const uint8_t *data, int64_t p, int64_t end, int64_t *code_out,
                       int64_t *msg_off, int64_t *msg_len)
{
    int seen_code = 0, seen_msg = 0;
    Field f;
    while (p < end) {
        if (!next_field(data, &p, end, &f))
            return 0;
        if (f.number == 3) {
            if (f.wire != 0 || seen_code++)
                return 0;
            *code_out = (int64_t)f.value;
        } else if (f.number == 2) {
            if (f.wire != 2 || seen_msg++)
                return 0;
            *msg_off = f.offset;
            *msg_len = f.length;
        }
    }
    return 1;
}

/* Store a singular span field; 0 on a second occurrence or the wrong wire type. */
static int store(int64_t *cols, Py_ssize_t n, Py_ssize_t i, const Field *f, uint32_t wire,
                 int off_col, int len_col, uint32_t *seen)
{
    uint32_t bit = 1u << f->number;
    if (f->wire != wire || (*seen & bit))
        return 0;
    *seen |= bit;
    if (wire == 2) {
        cols[off_col * n + i] = f->offset;
        cols[len_col * n + i] = f->length;
    } else {
        cols[off_col * n + i] = (int64_t)f->value;
    }
    return 1;
}

static int scan_one_span(const uint8_t *data, int64_t p, int64_t end, int64_t *cols, Py_ssize_t n,
                         Py_ssize_t i, int64_t *attrs, Py_ssize_t cap, Py_ssize_t *count)
{
    uint32_t seen = 0;
    Field f;
    int ok = 1;
    while (ok && p < end) {
        if (!next_field(data, &p, end, &f))
            return 0;
        switch (f.number) {
        case 1: ok = store(cols, n, i, &f, 2, C_TRACE_OFF, C_TRACE_LEN, &seen); break;
        case 2: ok = store(cols, n, i, &f, 2, C_SPAN_OFF, C_SPAN_LEN, &seen); break;
        case 4: ok = store(cols, n, i, &f, 2, C_PARENT_OFF, C_PARENT_LEN, &seen); break;
        case 5: ok = store(cols, n, i, &f, 2, C_NAME_OFF, C_NAME_LEN, &seen); break;
        case 6: ok = store(cols, n, i, &f, 0, C_KIND, C_KIND, &seen); break;
        case 7: ok = store(cols, n, i, &f, 1, C_START, C_START, &seen); break;
        case 8: ok = store(cols, n, i, &f, 1, C_END, C_END, &seen); break;
        case 15:
            ok = store(cols, n, i, &f, 2, C_STATUS_OFF, C_STATUS_LEN, &seen)
                 && scan_status(data, f.offset, f.offset + f.length, &cols[C_CODE * n + i],
                                &cols[C_MSG_OFF * n + i], &cols[C_MSG_LEN * n + i]);
            break;
        case 9:
            ok = f.wire == 2;
            if (ok) {
                if (*count < cap) {
                    attrs[*count] = i;
                    attrs[cap + *count] = f.offset;
                    attrs[2 * cap + *count] = f.length;
                }
                (*count)++;
            }
            break;
        case 11:
            ok = f.wire == 2;
            cols[C_FLAGS * n + i] |= F_EVENTS;
            break;
        default:
            break;
        }
    }
    return ok;
}

/* -- the outer levels: ExportTraceServiceRequest -> ResourceSpans -> ScopeSpans -> spans -- */

typedef struct {
    int64_t *spans;     /* (2, cap): start, end of each span */
    Py_ssize_t span_cap, n_spans;
    int64_t *resources; /* (3, cap): message index, Resource offset (-1: none), length */
    Py_ssize_t res_cap, n_res;
    int64_t *runs;      /* (2, cap): resource record, spans in the run */
    Py_ssize_t run_cap, n_runs;
} Outer;

static void put(int64_t *table, Py_ssize_t cap, Py_ssize_t row, int64_t a, int64_t b, int64_t c, int ncols)
{
    if (row >= cap)
        return;
    table[row] = a;
    table[cap + row] = b;
    if (ncols > 2)
        table[2 * cap + row] = c;
}

/* ScopeSpans: every field 2 is a span (length-delimited); 0 when unusual. */
static int walk_scope(const uint8_t *data, int64_t p, int64_t end, Outer *o, Py_ssize_t resource)
{
    Field f;
    Py_ssize_t first = o->n_spans;
    while (p < end) {
        if (!next_field(data, &p, end, &f) || (f.number == 2 && f.wire != 2))
            return 0;
        if (f.number == 2)
            put(o->spans, o->span_cap, o->n_spans++, f.offset, f.offset + f.length, 0, 2);
    }
    if (o->n_spans > first)
        put(o->runs, o->run_cap, o->n_runs++, resource, o->n_spans - first, 0, 2);
    return 1;
}

/* ResourceSpans: at most one resource (1), any number of ScopeSpans (2). */
static int walk_resource_spans(const uint8_t *data, int64_t p, int64_t end, Outer *o, Py_ssize_t message)
{
    Field f;
    int64_t res_off = -1, res_len = 0;
    int64_t scan_p = p;
    while (scan_p < end) { /* the resource first: runs refer to it */
        if (!next_field(data, &scan_p, end, &f) || ((f.number == 1 || f.number == 2) && f.wire != 2))
            return 0;
        if (f.number == 1) {
            if (res_off >= 0)
                return 0; /* two resources merge in protobuf: leave that to the reference */
            res_off = f.offset;
            res_len = f.length;
        }
    }
    Py_ssize_t resource = o->n_res++;
    put(o->resources, o->res_cap, resource, message, res_off, res_len, 3);
    while (p < end) {
        if (!next_field(data, &p, end, &f))
            return 0;
        if (f.number == 2 && !walk_scope(data, f.offset, f.offset + f.length, o, resource))
            return 0;
    }
    return 1;
}

/* One request; 0 when unusual (the caller rolls back what it recorded). */
static int walk_request(const uint8_t *data, int64_t p, int64_t end, Outer *o, Py_ssize_t message)
{
    Field f;
    while (p < end) {
        if (!next_field(data, &p, end, &f) || (f.number == 1 && f.wire != 2))
            return 0;
        if (f.number == 1 && !walk_resource_spans(data, f.offset, f.offset + f.length, o, message))
            return 0;
    }
    return 1;
}

static int check_rows(Py_buffer *buf, Py_ssize_t n, Py_ssize_t cols, const char *what)
{
    if (buf->len < (Py_ssize_t)sizeof(int64_t) * cols * n) {
        PyErr_Format(PyExc_ValueError, "%s: buffer too small", what);
        return 0;
    }
    return 1;
}

static PyObject *scan_spans(PyObject *self, PyObject *args)
{
    Py_buffer data, starts, ends, cols_buf, attrs_buf;
    if (!PyArg_ParseTuple(args, "y*y*y*w*w*", &data, &starts, &ends, &cols_buf, &attrs_buf))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = starts.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t cap = attrs_buf.len / (Py_ssize_t)(3 * sizeof(int64_t));
    if (ends.len != starts.len || !check_rows(&cols_buf, n, N_SPAN_COLS, "cols"))
        goto done;
    const uint8_t *bytes = (const uint8_t *)data.buf;
    const int64_t *s = (const int64_t *)starts.buf, *e = (const int64_t *)ends.buf;
    int64_t *cols = (int64_t *)cols_buf.buf, *attrs = (int64_t *)attrs_buf.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < 0 || s[i] > e[i] || e[i] > data.len) {
            PyErr_SetString(PyExc_ValueError, "span bounds outside the data");
            goto done;
        }
    }
    Py_ssize_t count = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        for (int c = 0; c < N_SPAN_COLS; c++)
            cols[c * n + i] = 0;
        cols[C_TRACE_OFF * n + i] = cols[C_SPAN_OFF * n + i] = cols[C_PARENT_OFF * n + i] = -1;
        cols[C_NAME_OFF * n + i] = cols[C_MSG_OFF * n + i] = cols[C_STATUS_OFF * n + i] = -1;
        if (!scan_one_span(bytes, s[i], e[i], cols, n, i, attrs, cap, &count))
            cols[C_FLAGS * n + i] |= F_BAD;
        if (cols[C_TRACE_OFF * n + i] >= 0
            && any_nonzero(bytes, cols[C_TRACE_OFF * n + i], cols[C_TRACE_LEN * n + i]))
            cols[C_FLAGS * n + i] |= F_TRACE_NZ;
        if (cols[C_SPAN_OFF * n + i] >= 0
            && any_nonzero(bytes, cols[C_SPAN_OFF * n + i], cols[C_SPAN_LEN * n + i]))
            cols[C_FLAGS * n + i] |= F_SPAN_NZ;
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(count <= cap ? count : -count);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&cols_buf);
    PyBuffer_Release(&attrs_buf);
    return result;
}

static PyObject *scan_requests(PyObject *self, PyObject *args)
{
    Py_buffer data, starts, ends, unusual, spans, resources, runs;
    if (!PyArg_ParseTuple(args, "y*y*y*w*w*w*w*", &data, &starts, &ends, &unusual, &spans, &resources, &runs))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = starts.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *s = (const int64_t *)starts.buf, *e = (const int64_t *)ends.buf;
    uint8_t *flags = (uint8_t *)unusual.buf;
    Outer o = {(int64_t *)spans.buf, spans.len / (Py_ssize_t)(2 * sizeof(int64_t)), 0,
               (int64_t *)resources.buf, resources.len / (Py_ssize_t)(3 * sizeof(int64_t)), 0,
               (int64_t *)runs.buf, runs.len / (Py_ssize_t)(2 * sizeof(int64_t)), 0};
    if (ends.len != starts.len || unusual.len < n) {
        PyErr_SetString(PyExc_ValueError, "scan_requests: bad buffer sizes");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < 0 || s[i] > e[i] || e[i] > data.len) {
            PyErr_SetString(PyExc_ValueError, "message bounds outside the data");
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Outer before = o;
        flags[i] = !walk_request((const uint8_t *)data.buf, s[i], e[i], &o, i);
        if (flags[i])
            o = before; /* the whole message goes to the per-span reader */
    }
    result = Py_BuildValue("nnn", o.n_spans, o.n_res, o.n_runs);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&unusual);
    PyBuffer_Release(&spans);
    PyBuffer_Release(&resources);
    PyBuffer_Release(&runs);
    return result;
}

/* One KeyValue: key (1) and value (2) exactly once each, nothing else; the AnyValue holds
 * exactly one field, a string (1) or an int (3). Anything else stays KV_SLOW. */
static void scan_keyvalue(const uint8_t *data, int64_t p, int64_t end, int64_t *cols, Py_ssize_t n,
                          Py_ssize_t i)
{
    Field f, key = {0}, value = {0};
    int keys = 0, values = 0;
    while (p < end) {
        if (!next_field(data, &p, end, &f) || f.wire != 2)
            return;
        if (f.number == 1)
            key = f, keys++;
        else if (f.number == 2)
            value = f, values++;
        else
            return;
    }
    if (keys != 1 || values != 1)
        return;
    int64_t q = value.offset, q_end = value.offset + value.length;
    if (q >= q_end || !next_field(data, &q, q_end, &f) || q != q_end)
        return;
    cols[K_KEY_OFF * n + i] = key.offset;
    cols[K_KEY_LEN * n + i] = key.length;
    if (f.number == 1 && f.wire == 2) {
        cols[K_VAL_OFF * n + i] = f.offset;
        cols[K_VAL_LEN * n + i] = f.length;
        cols[K_KIND * n + i] = KV_STRING;
    } else if (f.number == 3 && f.wire == 0) {
        cols[K_INT * n + i] = (int64_t)f.value;
        cols[K_KIND * n + i] = KV_INT;
    }
}

static PyObject *scan_keyvalues(PyObject *self, PyObject *args)
{
    Py_buffer data, offsets, cols_buf;
    if (!PyArg_ParseTuple(args, "y*y*w*", &data, &offsets, &cols_buf))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = offsets.len / (Py_ssize_t)sizeof(int64_t) - 1;
    const int64_t *o = (const int64_t *)offsets.buf;
    if (n < 0 || !check_rows(&cols_buf, n, N_KV_COLS, "cols"))
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (o[i] < 0 || o[i] > o[i + 1] || o[i + 1] > data.len) {
            PyErr_SetString(PyExc_ValueError, "offsets outside the data");
            goto done;
        }
    }
    int64_t *cols = (int64_t *)cols_buf.buf;
    memset(cols, 0, sizeof(int64_t) * N_KV_COLS * n);
    for (Py_ssize_t i = 0; i < n; i++)
        scan_keyvalue((const uint8_t *)data.buf, o[i], o[i + 1], cols, n, i);
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&cols_buf);
    return result;
}

/* Arrow binary-view structs (16 bytes each) of slices of data; lengths 0 for nulls. */
static PyObject *binary_views(PyObject *self, PyObject *args)
{
    Py_buffer data, offsets, lengths, views;
    if (!PyArg_ParseTuple(args, "y*y*y*w*", &data, &offsets, &lengths, &views))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = offsets.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *o = (const int64_t *)offsets.buf, *l = (const int64_t *)lengths.buf;
    if (lengths.len != offsets.len || views.len < 16 * n || data.len > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "binary_views: bad buffer sizes");
        goto done;
    }
    uint8_t *out = (uint8_t *)views.buf;
    const uint8_t *bytes = (const uint8_t *)data.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t off = o[i], len = l[i];
        if (len < 0 || (len > 0 && (off < 0 || off > data.len - len))) {
            PyErr_SetString(PyExc_ValueError, "binary_views: slice outside the data");
            goto done;
        }
        uint8_t *v = out + 16 * i;
        int32_t len32 = (int32_t)len, off32 = len ? (int32_t)off : 0;
        memset(v, 0, 16);
        memcpy(v, &len32, 4);
        if (len <= 12) {
            if (len)
                memcpy(v + 4, bytes + off, (size_t)len);
        } else {
            memcpy(v + 4, bytes + off, 4);
            memcpy(v + 12, &off32, 4); /* buffer index 0 at v + 8 */
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&views);
    return result;
}

static char hex_pairs[256][2]; /* "00".."ff", filled at import */

/* Lower-case hex of the ids of exactly `size` bytes, packed (other rows write nothing). */
static PyObject *hex_ids(PyObject *self, PyObject *args)
{
    Py_buffer data, offsets, lengths, chars;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*y*y*nw*", &data, &offsets, &lengths, &size, &chars))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = offsets.len / (Py_ssize_t)sizeof(int64_t), written = 0;
    const int64_t *o = (const int64_t *)offsets.buf, *l = (const int64_t *)lengths.buf;
    const uint8_t *bytes = (const uint8_t *)data.buf;
    char *out = (char *)chars.buf;
    if (lengths.len != offsets.len || size <= 0) {
        PyErr_SetString(PyExc_ValueError, "hex_ids: bad arguments");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (l[i] != size)
            continue;
        if (o[i] < 0 || o[i] > data.len - size || written + 2 * size > chars.len) {
            PyErr_SetString(PyExc_ValueError, "hex_ids: id outside the buffers");
            goto done;
        }
        const uint8_t *src = bytes + o[i];
        char *dst = out + written;
        for (Py_ssize_t k = 0; k < size; k++)
            memcpy(dst + 2 * k, hex_pairs[src[k]], 2);
        written += 2 * size;
    }
    result = PyLong_FromSsize_t(written);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&chars);
    return result;
}

/* "{" + the fragments of each span joined by "," + "}" (spans without any: null, length 0).
 * frag_offsets (int64, u + 1) index frag_data; ids (int64) lists the fragments of every span
 * in order, counts (int64, n) how many each span has; out_offsets is int32 (n + 1). */
static PyObject *join_fragments(PyObject *self, PyObject *args)
{
    Py_buffer fo, fd, ids_buf, counts_buf, oo, od;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*w*", &fo, &fd, &ids_buf, &counts_buf, &oo, &od))
        return NULL;
    PyObject *result = NULL;
    const int64_t *frag = (const int64_t *)fo.buf, *ids = (const int64_t *)ids_buf.buf;
    const int64_t *counts = (const int64_t *)counts_buf.buf;
    Py_ssize_t u = fo.len / (Py_ssize_t)sizeof(int64_t) - 1;
    Py_ssize_t n = counts_buf.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t n_ids = ids_buf.len / (Py_ssize_t)sizeof(int64_t);
    int32_t *out_offsets = (int32_t *)oo.buf;
    char *out = (char *)od.buf;
    const char *src = (const char *)fd.buf;
    Py_ssize_t written = 0, next = 0;
    if (u < 0 || oo.len < (Py_ssize_t)sizeof(int32_t) * (n + 1) || od.len > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "join_fragments: bad buffer sizes");
        goto done;
    }
    for (Py_ssize_t k = 0; k < u; k++) {
        if (frag[k] < 0 || frag[k] > frag[k + 1] || frag[k + 1] > fd.len) {
            PyErr_SetString(PyExc_ValueError, "join_fragments: fragment outside the data");
            goto done;
        }
    }
    out_offsets[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t c = counts[i];
        if (c < 0 || c > n_ids - next) {
            PyErr_SetString(PyExc_ValueError, "join_fragments: counts beyond the ids");
            goto done;
        }
        for (int64_t j = 0; j < c; j++) {
            int64_t id = ids[next + j];
            if (id < 0 || id >= u) {
                PyErr_SetString(PyExc_ValueError, "join_fragments: id out of range");
                goto done;
            }
            Py_ssize_t size = (Py_ssize_t)(frag[id + 1] - frag[id]);
            if (written + size + 2 > od.len) {
                PyErr_SetString(PyExc_ValueError, "join_fragments: output too small");
                goto done;
            }
            out[written++] = j ? ',' : '{';
            memcpy(out + written, src + frag[id], (size_t)size);
            written += size;
        }
        if (c)
            out[written++] = '}';
        next += c;
        out_offsets[i + 1] = (int32_t)written;
    }
    result = PyLong_FromSsize_t(written);
done:
    PyBuffer_Release(&fo);
    PyBuffer_Release(&fd);
    PyBuffer_Release(&ids_buf);
    PyBuffer_Release(&counts_buf);
    PyBuffer_Release(&oo);
    PyBuffer_Release(&od);
    return result;
}

static PyMethodDef methods[] = {
    {"join_fragments", join_fragments, METH_VARARGS,
     "join_fragments(frag_offsets, frag_data, ids, counts, out_offsets, out_data) -> bytes written"},
    {"scan_spans", scan_spans, METH_VARARGS,
     "scan_spans(data, starts, ends, cols, attrs) -> attribute count (-needed when attrs is too small)"},
    {"scan_requests", scan_requests, METH_VARARGS,
     "scan_requests(data, starts, ends, unusual, spans, resources, runs) -> (spans, resources, runs) counts"},
    {"scan_keyvalues", scan_keyvalues, METH_VARARGS,
     "scan_keyvalues(data, offsets, cols): key/value slices of KeyValue encodings"},
    {"binary_views", binary_views, METH_VARARGS,
     "binary_views(data, offsets, lengths, views): Arrow binary-view structs of slices"},
    {"hex_ids", hex_ids, METH_VARARGS,
     "hex_ids(data, offsets, lengths, size, chars) -> bytes written: hex of the ids of `size` bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_otlpscan",
    "Compiled protobuf wire scanner of OTLP span ingest (optional; see ingest/otlp_columnar.py).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__otlpscan(void)
{
    static const char digits[] = "0123456789abcdef";
    for (int b = 0; b < 256; b++) {
        hex_pairs[b][0] = digits[b >> 4];
        hex_pairs[b][1] = digits[b & 15];
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "N_SPAN_COLS", N_SPAN_COLS) < 0
        || PyModule_AddIntConstant(m, "N_KV_COLS", N_KV_COLS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
