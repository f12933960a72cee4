/* The elements some paths lead to in a raw BSON event, found without the GIL.
 *
 * The compiled twin of rigatoni_s3/_bsonpath.py's PathTree.spans, for typed columns:
 * the documents on the paths are read once for all of them, by name in a document and
 * by position in an array; the last of equal names wins, as in a decoded dict. Every
 * length is checked against the bytes exactly where the Python walk checks it, so both
 * find the same elements and fail on the same inputs; on a failure the caller asks the
 * Python walk, which says why.
 *
 * The tree is flat: node 0 is the event's top level, and the children of each node
 * are numbered contiguously, so a scan keeps the last element of each child in a
 * scratch slot of its own.
 */
#ifndef RIGATONI_BSONPATH_FIND_H
#define RIGATONI_BSONPATH_FIND_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

enum { BP_OK = 0, BP_MALFORMED = 1 };

#define BP_MAX_DEPTH 128

typedef struct {
    int32_t kind;   /* the element's type byte; -1 where nothing was found */
    int64_t start;  /* where its value starts */
    int64_t end;    /* and ends */
} bp_span;

typedef struct {
    const uint8_t *key;  /* the field name, as UTF-8 */
    size_t key_len;
    int64_t position;    /* the array position the name stands for, or -1 */
    int first_child;     /* children: nodes first_child .. first_child + nchildren - 1 */
    int nchildren;
    int has_positions;   /* whether any child has a position */
    int first_end;       /* paths ending here: ends[first_end .. first_end + nends - 1] */
    int nends;
} bp_node;

typedef struct {
    const bp_node *nodes;
    const int *ends;
    int npaths;
} bp_tree;

static inline int32_t bp_int32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                     ((uint32_t)p[3] << 24));
}

/* The value size of an element of type `kind` at `value`, or -1 for malformed bytes;
 * `limit` is where its document's elements end (the terminating NUL). */
static int64_t bp_value_size(const uint8_t *b, int kind, int64_t value, int64_t limit)
{
    switch (kind) {
    case 1: case 9: case 17: case 18: return 8;
    case 6: case 10: case 127: case 255: return 0;
    case 7: return 12;
    case 8: return 1;
    case 16: return 4;
    case 19: return 16;
    case 2: case 13: case 14: case 3: case 4: case 15: case 5: {
        int64_t add = kind == 3 || kind == 4 || kind == 15 ? 0 : kind == 5 ? 5 : 4;
        int64_t least = kind == 15 ? 14 : 5;
        int64_t size;
        if (value + 4 > limit)
            return -1;
        size = (int64_t)bp_int32(b + value) + add;
        return size < least ? -1 : size;
    }
    case 11: { /* two C strings */
        const uint8_t *pattern_end, *options_end;
        if (value >= limit)
            return -1;
        pattern_end = memchr(b + value, 0, (size_t)(limit - value));
        if (pattern_end == NULL || pattern_end + 1 >= b + limit)
            return -1;
        options_end = memchr(pattern_end + 1, 0, (size_t)(b + limit - (pattern_end + 1)));
        if (options_end == NULL)
            return -1;
        return (int64_t)(options_end + 1 - (b + value));
    }
    case 12: { /* a string, then 12 bytes */
        int64_t size;
        if (value + 4 > limit)
            return -1;
        size = 4 + (int64_t)bp_int32(b + value) + 12;
        return size < 17 ? -1 : size;
    }
    default:
        return -1;
    }
}

/* Scans the document or array at `at` for the children of `node`, then records and
 * descends into what it found. `last` holds one slot per node. */
static int bp_below(const bp_tree *t, const bp_node *node, int kind, const uint8_t *b,
                    size_t size, int64_t at, bp_span *found, bp_span *last, int depth)
{
    int64_t end, limit, position = 0;
    int c, by_position;
    if (depth > BP_MAX_DEPTH)
        return BP_MALFORMED;
    if (kind == 3)
        by_position = 0;
    else if (kind == 4 && node->has_positions)
        by_position = 1;
    else
        return BP_OK;
    if (at < 0 || at + 5 > (int64_t)size)
        return BP_MALFORMED;
    end = at + (int64_t)bp_int32(b + at);
    if (end < at + 5 || end > (int64_t)size || b[end - 1] != 0)
        return BP_MALFORMED;
    limit = end - 1;
    for (c = 0; c < node->nchildren; c++)
        last[node->first_child + c].kind = -1;
    at += 4;
    while (at < limit) {
        int type = b[at];
        const uint8_t *name_end;
        int64_t value, value_size, element_end;
        if (at + 1 >= limit)
            return BP_MALFORMED;
        name_end = memchr(b + at + 1, 0, (size_t)(limit - (at + 1)));
        if (name_end == NULL)
            return BP_MALFORMED;
        value = (int64_t)(name_end - b) + 1;
        value_size = bp_value_size(b, type, value, limit);
        if (value_size < 0)
            return BP_MALFORMED;
        element_end = value + value_size;
        if (element_end > limit)
            return BP_MALFORMED;
        for (c = 0; c < node->nchildren; c++) {
            const bp_node *child = &t->nodes[node->first_child + c];
            int match;
            if (by_position)
                match = child->position == position;
            else
                match = child->key_len == (size_t)(name_end - (b + at + 1)) &&
                        memcmp(child->key, b + at + 1, child->key_len) == 0;
            if (match) {
                bp_span *slot = &last[node->first_child + c];
                slot->kind = type;
                slot->start = value;
                slot->end = element_end;
                /* Names differ between children; positions too. */
                break;
            }
        }
        position++;
        at = element_end;
    }
    /* In the order of the children; the Python walk goes by first appearance, which
     * only changes which of two failures is met first, and both send the caller to
     * the Python walk. */
    for (c = 0; c < node->nchildren; c++) {
        int n = node->first_child + c;
        const bp_node *child = &t->nodes[n];
        bp_span element = last[n];
        int e, status;
        if (element.kind < 0)
            continue;
        for (e = 0; e < child->nends; e++)
            found[t->ends[child->first_end + e]] = element;
        if (child->nchildren > 0) {
            status = bp_below(t, child, element.kind, b, size, element.start, found, last,
                              depth + 1);
            if (status != BP_OK)
                return status;
        }
    }
    return BP_OK;
}

/* Where each path of `t` leads in the event `b`; `found` has one span per path and
 * `last` one per node. */
static int bp_find(const bp_tree *t, const uint8_t *b, size_t size, bp_span *found,
                   bp_span *last)
{
    int p;
    for (p = 0; p < t->npaths; p++)
        found[p].kind = -1;
    return bp_below(t, &t->nodes[0], 3, b, size, 0, found, last, 0);
}

#endif
