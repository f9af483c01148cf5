/* The body of the fused fast pass, included by _fastpass.c once per instruction set: every name defined
 * here goes through FN() so that each copy has its own, and the macros that set the copy up (FN, the vector
 * width VL, NV, LANES and the vector type names) are undefined at the end. See _fastpass.c for what it
 * computes.
 */
/* own/other updated with the logits of classes c0 .. c0 + CT - 1 of one chunk and one tile */
INLINE void FN(class_tile)(const int CT, const float *xs, const float *wt, long C, long c0,
                       const int32_t *ix, long n, const vi *lab, vf *own, vf *oth)
{
    vf acc[MAX_CT][NV];
#pragma GCC unroll 12
    for (int t = 0; t < CT; t++)
        for (int v = 0; v < NV; v++)
            acc[t][v] = (vf){0};
    for (long j = 0; j < n; j++) {
        const long i = ix[j];
        const float *xr = xs + i * XT_TILE;
        const float *wr = wt + i * C + c0;
        vf x[NV];
        for (int v = 0; v < NV; v++)
            x[v] = *(const vfu *)(xr + v * VL);
#pragma GCC unroll 12
        for (int t = 0; t < CT; t++) {
            const float w = wr[t];
            for (int v = 0; v < NV; v++)
                acc[t][v] += x[v] * w;
        }
    }
#pragma GCC unroll 12
    for (int t = 0; t < CT; t++) {
        const int32_t c = (int32_t)(c0 + t);
        for (int v = 0; v < NV; v++) {
            const vi is_label = lab[v] == c;              /* -1 where the sample's label is c */
            const vi bigger = acc[t][v] > oth[v];          /* false for NaN: only in undecided rows */
            const vi take = bigger & ~is_label;
            own[v] = (vf)(((vi)acc[t][v] & is_label) | ((vi)own[v] & ~is_label));
            oth[v] = (vf)(((vi)acc[t][v] & take) | ((vi)oth[v] & ~take));
        }
    }
}

/* The certificate of one chunk over one tile: its certain correct predictions added to *cnt (one count per
   lane), its undecided pairs recorded; returns the number of pairs so far */
INLINE long FN(certify)(const vf *own, const vf *oth, const float *tk, const vi *valid, vi *cnt, long k, long s0,
                        int32_t *pairs, long n_pairs, long capacity)
{
    const vf inf = (vf){0} + __builtin_inff();
    union {
        vi v;
        uint64_t u[VL / 2];
    } any = {.v = (vi){0}};
    vi near[NV];
    for (int v = 0; v < NV; v++) {
        const vf t = *(const vfu *)(tk + v * VL);
        const vf d = oth[v] - own[v];
        const vf mag = (vf)((vi)d & ((vi){0} + 0x7fffffff));
        *cnt -= (d < -t) & valid[v];
        near[v] = ((mag <= t) | (t == inf)) & valid[v];
        any.v |= near[v];
    }
    uint64_t seen = 0;
    for (int l = 0; l < VL / 2; l++)
        seen |= any.u[l];
    if (seen) {
        for (int v = 0; v < NV; v++)
            for (int l = 0; l < VL; l++)
                if (near[v][l]) {
                    if (n_pairs < capacity) {
                        pairs[2 * n_pairs] = (int32_t)k;
                        pairs[2 * n_pairs + 1] = (int32_t)(s0 + v * VL + l);
                    }
                    n_pairs++;
                }
    }
    return n_pairs;
}

/* A tile's rows read in order before the chunks read them in random order: the prefetchers stream them into
   the core's cache at full speed, where the random reads would each wait for a line from further out */
INLINE void FN(warm_tile)(const float *xs, long xrows)
{
    for (long i = 0; i < xrows * XT_TILE; i += 16)
        __builtin_prefetch(xs + i, 0, 2);
}

INLINE void FN(tile_lanes)(const int32_t *lab, long s0, long nb, vi *labv, vi *valid)
{
    const vi lane = LANES;
    for (int v = 0; v < NV; v++) {
        labv[v] = *(const viu *)(lab + s0 + v * VL);
        valid[v] = lane + (int32_t)(s0 + v * VL) < (int32_t)nb; /* -1 on the samples of the block */
    }
}

/* With at most MAX_CT classes: one function per number of classes, the whole loop in registers */
#define SMALL(n_)                                                                                              \
    static long FN(small_##n_)(const float *xt, long xrows, long ld, long nb, const float *wt, const int32_t *idx,           \
                               const int64_t *off, long K, const int32_t *thr_row, const float *thr,           \
                               const int32_t *lab, vi *cnt, int32_t *pairs, long capacity)                     \
    {                                                                                                          \
        long n_pairs = 0;                                                                                      \
        for (long s0 = 0; s0 < nb; s0 += TILE) {                                                               \
            vi labv[NV], valid[NV];                                                                            \
            FN(tile_lanes)(lab, s0, nb, labv, valid);                                                          \
            const float *xs = xt + (s0 / XT_TILE) * xrows * XT_TILE + s0 % XT_TILE;                            \
            if (s0 % XT_TILE == 0)                                                                             \
                FN(warm_tile)(xs, xrows);                                                                      \
            for (long k = 0; k < K; k++) {                                                                     \
                vf own[NV], oth[NV];                                                                           \
                for (int v = 0; v < NV; v++) {                                                                 \
                    own[v] = (vf){0};                                                                          \
                    oth[v] = (vf){0} - __builtin_inff();                                                       \
                }                                                                                              \
                FN(class_tile)(n_, xs, wt, n_, 0, idx + off[k], off[k + 1] - off[k], labv, own, oth);           \
                n_pairs = FN(certify)(own, oth, thr + (long)thr_row[k] * ld + s0, valid, cnt + k, k, s0, pairs, \
                                      n_pairs, capacity);                                                      \
            }                                                                                                  \
        }                                                                                                      \
        return n_pairs;                                                                                        \
    }                                                                                                          \
    static __attribute__((noinline)) void FN(class_tile_##n_)(const float *xs, const float *wt,              \
                                                              long C, long c0, const int32_t *ix, long n,     \
                                                              const vi *lab, vf *own, vf *oth)                \
    {                                                                                                          \
        FN(class_tile)(n_, xs, wt, C, c0, ix, n, lab, own, oth);                                                \
    }
SMALL(1) SMALL(2) SMALL(3) SMALL(4) SMALL(5) SMALL(6) SMALL(7) SMALL(8) SMALL(9) SMALL(10) SMALL(11) SMALL(12)
#undef SMALL

/* With more classes: tiles of about equal size (at most MAX_CT) summed one after the other */
static long FN(large)(const float *xt, long xrows, long ld, long nb, const float *wt, long C, const int32_t *idx,
                      const int64_t *off, long K, const int32_t *thr_row, const float *thr, const int32_t *lab,
                      vi *cnt, int32_t *pairs, long capacity)
{
    const long tiles = (C + MAX_CT - 1) / MAX_CT;
    const long base = C / tiles, extra = C % tiles;
    long n_pairs = 0;
    for (long s0 = 0; s0 < nb; s0 += TILE) {
        vi labv[NV], valid[NV];
        FN(tile_lanes)(lab, s0, nb, labv, valid);
        const float *xs = xt + (s0 / XT_TILE) * xrows * XT_TILE + s0 % XT_TILE;
        if (s0 % XT_TILE == 0)
            FN(warm_tile)(xs, xrows);
        for (long k = 0; k < K; k++) {
            vf own[NV], oth[NV];
            for (int v = 0; v < NV; v++) {
                own[v] = (vf){0};
                oth[v] = (vf){0} - __builtin_inff();
            }
            const int32_t *ix = idx + off[k];
            const long n = off[k + 1] - off[k];
            long c0 = 0;
            for (long t = 0; t < tiles; t++) {
                const long ct = base + (t < extra);
                switch (ct) {
#define CASE(n_) \
    case n_: FN(class_tile_##n_)(xs, wt, C, c0, ix, n, labv, own, oth); break;
                    CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)
                    CASE(7) CASE(8) CASE(9) CASE(10) CASE(11) CASE(12)
#undef CASE
                }
                c0 += ct;
            }
            n_pairs = FN(certify)(own, oth, thr + (long)thr_row[k] * ld + s0, valid, cnt + k, k, s0, pairs, n_pairs,
                                  capacity);
        }
    }
    return n_pairs;
}

static long FN(block_counts)(const float *xt, long xrows, long ld, long nb, const float *wt, long C, const int32_t *idx,
                             const int64_t *off, long K, const int32_t *thr_row, const float *thr, const int32_t *lab,
                             int64_t *right, int32_t *pairs, long capacity)
{
    vi *cnt = NULL; /* certain correct predictions per chunk and lane */
    if (K > 0 && posix_memalign((void **)&cnt, 64, (size_t)K * sizeof(vi)) != 0)
        return -1;
    for (long k = 0; k < K; k++)
        cnt[k] = (vi){0};
    long n_pairs;
    switch (C) {
#define CASE(n_)                                                                                    \
    case n_:                                                                                        \
        n_pairs = FN(small_##n_)(xt, xrows, ld, nb, wt, idx, off, K, thr_row, thr, lab, cnt, pairs, capacity); \
        break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11) CASE(12)
#undef CASE
    default:
        n_pairs = FN(large)(xt, xrows, ld, nb, wt, C, idx, off, K, thr_row, thr, lab, cnt, pairs, capacity);
    }
    for (long k = 0; k < K; k++) {
        int64_t sum = 0;
        for (int l = 0; l < VL; l++)
            sum += cnt[k][l];
        right[k] += sum;
    }
    free(cnt);
    return n_pairs;
}

#undef FN
#undef VL
#undef NV
#undef LANES
#undef vf
#undef vi
#undef vfu
#undef viu
