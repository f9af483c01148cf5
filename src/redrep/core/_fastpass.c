/* The fast pass of the chunk accuracies in one loop: gathered products, margins and their certificate.
 *
 * For a block of samples (transposed: one row per neuron, then a row of ones for the bias) and every
 * chunk, the float32 logits of a tile of 32 samples are summed in registers, the label's margin
 * D = max_{c != y} L_c - L_y is formed there and compared with the sample's error bound T: D < -T is a
 * certain correct prediction, |D| <= T (or T infinite) an undecided pair, left to the exact pass in
 * redrep/core/accuracy.py. No logit is written to memory and no neuron is copied, so a chunk costs its own
 * multiply-adds, not those of the whole layer. The bound holds for any order of the sums, with or without
 * fused multiply-adds (docs/method.md, "Chunk accuracies: one pass, exact"), so the compiler may use either.
 *
 * The module has no Python functions: redrep/core/accuracy.py calls redrep_block_counts_at through ctypes, which
 * releases the interpreter lock. setup.py builds it as an optional extension; where it is missing, the
 * numpy fast pass serves, with the same counts. On x86-64 with GCC the loop is compiled three times (the
 * x86-64-v4 level with AVX-512, v3 with AVX2 and FMA, and plain x86-64), the best the CPU runs chosen at
 * each call.
 */
#define PY_SSIZE_T_CLEAN
/* the stable ABI of Python 3.10: one build serves every later Python (the module uses no Python API) */
#define Py_LIMITED_API 0x030A0000
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_CT 12 /* classes summed in registers at a time */
#define TILE (VL * NV) /* samples per tile of the loop: 32, 8 or 4, as the copy's vectors are */
#define XT_TILE 32     /* samples per tile of the transposed block in memory (a multiple of every TILE) */
#define INLINE static inline __attribute__((always_inline))

/* Each copy of the body gets its vector width: VL floats per vector, NV vectors of samples per tile (a tile's
   NV x MAX_CT sums stay in registers), vf/vi its vector types, vfu/viu the same for unaligned loads. */
#define VECTOR_TYPES(bytes)                                                          \
    typedef float vf __attribute__((vector_size(bytes)));                            \
    typedef int32_t vi __attribute__((vector_size(bytes)));                          \
    typedef float vfu __attribute__((vector_size(bytes), aligned(4)));               \
    typedef int32_t viu __attribute__((vector_size(bytes), aligned(4)));

/* The x86-64-v3 and v4 copies need GCC 11 or newer (the arch=x86-64-vN targets); an older GCC, or another
   compiler, builds the plain x86-64 copy only (as does -DREDREP_FASTPASS_BASE_ONLY), and redrep/core/accuracy.py warns
   where the CPU could run a faster one. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 11 && !defined(REDREP_FASTPASS_BASE_ONLY)
#define LEVELS 1
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4") /* AVX-512: 32 registers of 16 floats */
#define VL 16
#define NV 2
#define LANES {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
#define vf vf_v4
#define vi vi_v4
#define vfu vfu_v4
#define viu viu_v4
VECTOR_TYPES(64)
#define FN(name) name##_v4
#include "_fastpass_body.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3") /* AVX2 and FMA: 16 registers of 8 floats */
#define VL 8
#define NV 1
#define LANES {0, 1, 2, 3, 4, 5, 6, 7}
#define vf vf_v3
#define vi vi_v3
#define vfu vfu_v3
#define viu viu_v3
VECTOR_TYPES(32)
#define FN(name) name##_v3
#include "_fastpass_body.h"
#pragma GCC pop_options
#endif

/* any CPU: vectors of 4 floats, as SSE2 has (and as other compilers' vector extensions map) */
#define VL 4
#define NV 1
#define LANES {0, 1, 2, 3}
VECTOR_TYPES(16)
#define FN(name) name##_base
#include "_fastpass_body.h"

/* The calling convention of this library: redrep/core/accuracy.py refuses a build whose number is not its own (an
   extension left from an older source, say), so that it never calls a function with the wrong arguments. */
int redrep_fastpass_abi(void) { return 2; }

/* The instruction-set level of the best copy this CPU runs: 4 (x86-64-v4, AVX-512), 3 (x86-64-v3, AVX2) or 0. */
int redrep_fastpass_level(void)
{
#ifdef LEVELS
    __builtin_cpu_init();
#if __GNUC__ >= 12 /* the level names; GCC 11 knows the features they stand for */
    if (__builtin_cpu_supports("x86-64-v4"))
        return 4;
    if (__builtin_cpu_supports("x86-64-v3"))
        return 3;
#else
    const int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
                   __builtin_cpu_supports("bmi2");
    if (v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return 4;
    if (v3)
        return 3;
#endif
#endif
    return 0;
}

/* Whether this build holds the x86-64-v3 and v4 copies (1), or the plain x86-64 one only (0: a compiler older than
   GCC 11, or not GCC), so that redrep/core/accuracy.py can say so where the CPU would run a faster copy. */
int redrep_fastpass_has_levels(void)
{
#ifdef LEVELS
    return 1;
#else
    return 0;
#endif
}

/* The vector extensions a CPU has that a copy of this build would use: 4 (AVX-512), 3 (AVX2 and FMA) or 0, read
   whatever the build holds (the plain copy's build cannot ask by level name), for the warning above. */
int redrep_cpu_level(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    const int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return 4;
    return v3 ? 3 : 0;
#else
    return 0;
#endif
}

/* redrep_block_counts_at(level, ...): correct and undecided predictions of every chunk over one block of samples.
 *
 * level   the copy to run: 4, 3 or 0, -1 for the best this CPU runs
 * xt      the block transposed, tile by tile: samples 32 t .. 32 t + 31 are the xrows = width + 1 rows of 32
 *         floats at xt + 32 t xrows, row `width` all ones (the bias); one tile's rows lie together, in few pages
 * ld      rows of `thr` and `lab`: a multiple of 32, at least nb
 * wt      (width + 1) x C floats: the readout transposed, row `width` the bias
 * idx     the chunks' neuron indices, each chunk followed by `width` (its bias term); chunk k is
 *         idx[off[k] .. off[k + 1])
 * thr     the bounds T, one row of ld floats per chunk size; chunk k uses row thr_row[k] (inf: undecided)
 * lab     ld labels (those past nb are not read into any count)
 * right   per chunk, incremented by its certain correct predictions
 * pairs   (chunk, sample) of the undecided pairs, the first `capacity` of them
 *
 * Returns the number of undecided pairs, recorded or not: more than `capacity` means call again with more
 * room (and `right` reset); -1 if out of memory, -2 if this CPU cannot run that level.
 */
long redrep_block_counts_at(int level, const float *xt, long xrows, long ld, long nb, const float *wt, long C, const int32_t *idx,
                            const int64_t *off, long K, const int32_t *thr_row, const float *thr, const int32_t *lab,
                            int64_t *right, int32_t *pairs, long capacity)
{
    const int best = redrep_fastpass_level();
    if (level < 0)
        level = best;
    if (level > best || (level != 0 && level != 3 && level != 4))
        return -2;
#ifdef LEVELS
    if (level == 4)
        return block_counts_v4(xt, xrows, ld, nb, wt, C, idx, off, K, thr_row, thr, lab, right, pairs, capacity);
    if (level == 3)
        return block_counts_v3(xt, xrows, ld, nb, wt, C, idx, off, K, thr_row, thr, lab, right, pairs, capacity);
#endif
    return block_counts_base(xt, xrows, ld, nb, wt, C, idx, off, K, thr_row, thr, lab, right, pairs, capacity);
}

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastpass",
    .m_doc = "The fused fast pass of redrep.core.accuracy, called through ctypes (no Python functions).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastpass(void) { return PyModule_Create(&module); }
