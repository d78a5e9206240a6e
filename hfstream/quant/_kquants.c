/* Q4_K, Q5_K and Q6_K encoding with the reference's bytes, vectorized.
 *
 * ggml's K-quant encoders (what ggml_quantize_chunk and llama-quantize run) search, for every
 * sub-block of 16 or 32 values, the scale (and min) that quantize it best: 16 to 37 trial scales,
 * each a pass over the values with running float sums. They are scalar and take 30-120 ns a value
 * here; a q4_k_m conversion spends most of its CPU in them. Their result depends on every rounding
 * of those sums, so a faster encoder with the same bytes has to do the same float operations in the
 * same order.
 *
 * This does, eight super-blocks at a time: lane k of every vector works on super-block k and runs
 * the reference's steps for it one after the other, sums in the reference's order, the same
 * comparisons and the same integer rounding (nearest_int's 1.5*2^23 trick). Only independent
 * super-blocks run side by side, so nothing is reassociated. The file must be compiled without
 * contracting a*b+c into a fused multiply-add (the reference rounds the product first): the target
 * below does not enable FMA, and the build passes -ffp-contract=off for compilers that would be
 * told to (-march=native).
 *
 * Followed here: ggml's quantize_row_q{4,5,6}_K_ref (no importance weights) and
 * quantize_row_q{4,5,6}_K_impl (with them), with make_qkx2_quants, make_qkx3_quants,
 * make_qp_quants and make_qx_quants, as in ggml 0.20.2 to 0.25.3 (the same code in both).
 *
 * A super-block holding a NaN or an infinity (in the values or the weights) is not promised: there
 * the reference's result depends on which NaN reaches an operation first. It is flagged, and the
 * caller encodes it with ggml. Finite inputs only ever make the one default NaN (inf - inf, 0 * inf),
 * on which the order of operands does not matter.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#define QK_K 256
#define GROUP 8 /* super-blocks encoded side by side, one per lane */

/* ggml's type numbers */
enum { TYPE_Q4_K = 12, TYPE_Q5_K = 13, TYPE_Q6_K = 14 };

static Py_ssize_t block_bytes(int type) {
    switch (type) {
    case TYPE_Q4_K: return 144; /* d, dmin, 12 bytes of scales and mins, 128 of 4-bit quants */
    case TYPE_Q5_K: return 176; /* the same, and 32 bytes of fifth bits */
    case TYPE_Q6_K: return 210; /* 128 bytes of low 4 bits, 64 of high 2 bits, 16 int8 scales, d */
    default: return 0;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* AVX2 and F16C, and deliberately not FMA: nothing may be fused */
#define KERNEL __attribute__((target("avx2,f16c")))

static int cpu_ok(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}

/* ---------------------------------------------------------------------------------- scalars */

/* the reference's nearest_int: round through the mantissa of x + 1.5*2^23, for any x (outside
   +-2^22 it yields what the reference's bits yield too) */
static inline int nearest(float x) {
    const float v = x + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* f32 -> f16 as the reference's software conversion: round to nearest even; NaN -> sign | 0x7E00 */
KERNEL static inline uint16_t to_half(float f) {
    if (f != f) {
        uint32_t w;
        memcpy(&w, &f, sizeof w);
        return (uint16_t)(((w >> 16) & 0x8000) | 0x7E00);
    }
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

KERNEL static inline float from_half(uint16_t h) { return _cvtsh_ss(h); }

/* ----------------------------------------------------------------------------------- vectors */

#define V __m256
#define VI __m256i

KERNEL static inline VI v_nearest(V x) {
    const V v = _mm256_add_ps(x, _mm256_set1_ps(12582912.f));
    return _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x007fffff)),
                            _mm256_set1_epi32(0x00400000));
}

KERNEL static inline VI v_clamp(VI l, int lo, int hi) {
    return _mm256_max_epi32(_mm256_set1_epi32(lo), _mm256_min_epi32(_mm256_set1_epi32(hi), l));
}

KERNEL static inline V v_abs(V x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }

KERNEL static inline int v_any(V mask) { return _mm256_movemask_ps(mask) != 0; }

/* a ? b : c, lane by lane (a a comparison's mask) */
#define SEL(a, b, c) _mm256_blendv_ps((c), (b), (a))

KERNEL static inline void transpose8(V r[8]) {
    const V t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const V t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const V t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const V t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const V s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const V s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const V s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const V s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* t[v] lane k = rows[k][v], v < 256; returns the lanes whose rows hold a NaN or an infinity */
KERNEL static V gather_lanes(const float *const rows[GROUP], V t[QK_K]) {
    const VI exponent = _mm256_set1_epi32(0x7f800000);
    VI bad = _mm256_setzero_si256();
    for (int c = 0; c < QK_K; c += 8) {
        V r[8];
        for (int k = 0; k < 8; k++) r[k] = _mm256_loadu_ps(rows[k] + c);
        transpose8(r);
        for (int k = 0; k < 8; k++) {
            t[c + k] = r[k];
            const VI e = _mm256_and_si256(_mm256_castps_si256(r[k]), exponent);
            bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, exponent));
        }
    }
    return _mm256_castsi256_ps(bad);
}

/* 32 int32 lanes (values 0..127) as 32 bytes in order */
KERNEL static inline VI pack_bytes(VI a, VI b, VI c, VI d) {
    const VI packed = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* ------------------------------------------------------------ make_qkx2_quants / make_qkx3_quants */

/* What the search settled on for one sub-block in each lane: the scale and the_min returned, and how
   the quants L it left were made (clamp(nearest(iscale * (x - shift)), 0, nmax), or all zero where
   flat), for sub-blocks whose final scale rounds to zero and keep them. */
typedef struct {
    V scale, the_min, iscale, shift, flat;
} Search;

typedef struct {
    int nmax;
    float rmin, rdelta;
    int nstep;
    int flat_when_le; /* make_qkx3_quants gives up when max <= min, make_qkx2_quants when max == min */
} SearchParams;

/* Sub-blocks searched at once: independent chains of sums keep more of the core busy than one
   sub-block's (each sum is a chain of 32 dependent additions, as in the reference). */
#define NB 2

/* nearest_int(t) is round-half-to-even(t) while |t| < 2^22; beyond, the reference's bit trick gives
   other numbers, which the exact path reproduces. */
#define ROUNDS_EVENLY 4194303.f

/* How a trial's quants are rounded: through the reference's bit trick (EXACT), or by round-half-to-even
   and the clamps to 0 (LOW) and nmax (HIGH) that some value needs */
enum { EXACT = 1, LOW = 2, HIGH = 4 };

/* The rounding a trial needs: t = iscale * (x - shift) is monotonic in x, so its extremes are at the
   sub-blocks' smallest and largest values. Lanes in `ignore` do not count. */
KERNEL static inline int rounding(V iscale, V shift, V lo, V hi, V ignore, int nmax) {
    const V t_lo = _mm256_mul_ps(iscale, _mm256_sub_ps(lo, shift));
    const V t_hi = _mm256_mul_ps(iscale, _mm256_sub_ps(hi, shift));
    const V t_min = _mm256_min_ps(t_lo, t_hi), t_max = _mm256_max_ps(t_lo, t_hi);
    const V even = _mm256_and_ps(_mm256_cmp_ps(t_min, _mm256_set1_ps(-ROUNDS_EVENLY), _CMP_GT_OQ),
                                 _mm256_cmp_ps(t_max, _mm256_set1_ps(ROUNDS_EVENLY), _CMP_LT_OQ));
    const V low = _mm256_cmp_ps(t_min, _mm256_set1_ps(-0.5f), _CMP_LE_OQ);
    const V high = _mm256_cmp_ps(t_max, _mm256_set1_ps((float)nmax + 0.5f), _CMP_GE_OQ);
    const int live = ~_mm256_movemask_ps(ignore) & 0xFF;
    if ((_mm256_movemask_ps(even) & live) != live) return EXACT;
    return (_mm256_movemask_ps(low) & live ? LOW : 0) | (_mm256_movemask_ps(high) & live ? HIGH : 0);
}

/* clamp(nearest_int(iscale * (x - shift)), 0, nmax) as a float; without a clamp where no value needs it
   (a -0 left unclamped changes none of the sums or errors it enters) */
KERNEL static inline V quant(V x, V iscale, V shift, V vmax, int nmax, int mode) {
    const V t = _mm256_mul_ps(iscale, _mm256_sub_ps(x, shift));
    if (mode & EXACT) return _mm256_cvtepi32_ps(v_clamp(v_nearest(t), 0, nmax));
    V l = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (mode & LOW) l = _mm256_max_ps(l, _mm256_setzero_ps());
    if (mode & HIGH) l = _mm256_min_ps(l, vmax);
    return l;
}

/* One trial scale over NB sub-blocks: the quants (laux) and the sums of w*l, w*l*l, w*l*x */
KERNEL static inline void trial(const V *const x[NB], const V *const w[NB], const V iscale[NB], const V mn[NB],
                                int nmax, int mode, V laux[NB][32], V sum_l[NB], V sum_l2[NB], V sum_xl[NB]) {
    const V vmax = _mm256_set1_ps((float)nmax);
    for (int b = 0; b < NB; b++) sum_l[b] = sum_l2[b] = sum_xl[b] = _mm256_setzero_ps();
    for (int i = 0; i < 32; i++) {
        for (int b = 0; b < NB; b++) {
            const V l = quant(x[b][i], iscale[b], mn[b], vmax, nmax, mode);
            laux[b][i] = l;
            const V wl = _mm256_mul_ps(w[b][i], l);
            sum_l[b] = _mm256_add_ps(sum_l[b], wl);
            sum_l2[b] = _mm256_add_ps(sum_l2[b], _mm256_mul_ps(wl, l));
            sum_xl[b] = _mm256_add_ps(sum_xl[b], _mm256_mul_ps(wl, x[b][i]));
        }
    }
}

/* make_qkx2/3_quants(32, nmax, x, w, ..., rmin, rdelta, nstep, use_mad=false) for NB sub-blocks, lane by lane */
KERNEL static void min_scale_search(const V *const x[NB], const V *const w[NB], const SearchParams *p, Search r[NB]) {
    const V zero = _mm256_setzero_ps();
    const int nmax = p->nmax;
    const V vmax = _mm256_set1_ps((float)nmax);
    V mn[NB], mx[NB], lo[NB], sum_w[NB], sum_x[NB], iscale[NB], scale[NB], best[NB];
    for (int b = 0; b < NB; b++) {
        mn[b] = mx[b] = x[b][0];
        sum_w[b] = w[b][0];
        sum_x[b] = _mm256_mul_ps(sum_w[b], x[b][0]);
    }
    for (int i = 1; i < 32; i++) {
        for (int b = 0; b < NB; b++) {
            mn[b] = _mm256_min_ps(x[b][i], mn[b]); /* if (x < min) min = x */
            mx[b] = _mm256_max_ps(x[b][i], mx[b]); /* if (x > max) max = x */
            sum_w[b] = _mm256_add_ps(sum_w[b], w[b][i]);
            sum_x[b] = _mm256_add_ps(sum_x[b], _mm256_mul_ps(w[b][i], x[b][i]));
        }
    }
    int mode = 0;
    for (int b = 0; b < NB; b++) {
        lo[b] = mn[b];
        mn[b] = SEL(_mm256_cmp_ps(mn[b], zero, _CMP_GT_OQ), zero, mn[b]);
        r[b].flat = p->flat_when_le ? _mm256_cmp_ps(mx[b], mn[b], _CMP_LE_OQ) : _mm256_cmp_ps(mx[b], mn[b], _CMP_EQ_OQ);
        iscale[b] = _mm256_div_ps(vmax, _mm256_sub_ps(mx[b], mn[b]));
        scale[b] = _mm256_div_ps(_mm256_set1_ps(1.f), iscale[b]);
        best[b] = zero;
        r[b].iscale = iscale[b];
        r[b].shift = mn[b];
        mode |= rounding(iscale[b], mn[b], lo[b], mx[b], r[b].flat, nmax);
    }
    mode = mode & EXACT ? EXACT : mode;
    for (int i = 0; i < 32; i++) {
        for (int b = 0; b < NB; b++) {
            const V l = quant(x[b][i], iscale[b], mn[b], vmax, nmax, mode);
            V diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale[b], l), mn[b]), x[b][i]);
            diff = _mm256_mul_ps(diff, diff);
            best[b] = _mm256_add_ps(best[b], _mm256_mul_ps(w[b][i], diff));
        }
    }
    V laux[NB][32];
    for (int is = 0; is <= p->nstep; ++is) {
        float step = p->rmin + p->rdelta * (float)is;
        step = step + (float)nmax;
        mode = 0;
        for (int b = 0; b < NB; b++) {
            iscale[b] = _mm256_div_ps(_mm256_set1_ps(step), _mm256_sub_ps(mx[b], mn[b]));
            mode |= rounding(iscale[b], mn[b], lo[b], mx[b], r[b].flat, nmax);
        }
        V sum_l[NB], sum_l2[NB], sum_xl[NB];
        switch (mode & EXACT ? EXACT : mode) { /* one copy of the loop for each, without a test inside */
        case EXACT: trial(x, w, iscale, mn, nmax, EXACT, laux, sum_l, sum_l2, sum_xl); break;
        case LOW | HIGH: trial(x, w, iscale, mn, nmax, LOW | HIGH, laux, sum_l, sum_l2, sum_xl); break;
        case LOW: trial(x, w, iscale, mn, nmax, LOW, laux, sum_l, sum_l2, sum_xl); break;
        case HIGH: trial(x, w, iscale, mn, nmax, HIGH, laux, sum_l, sum_l2, sum_xl); break;
        default: trial(x, w, iscale, mn, nmax, 0, laux, sum_l, sum_l2, sum_xl); break;
        }
        V positive[NB], this_scale[NB], this_min[NB], err[NB];
        int any = 0;
        for (int b = 0; b < NB; b++) {
            const V D = _mm256_sub_ps(_mm256_mul_ps(sum_w[b], sum_l2[b]), _mm256_mul_ps(sum_l[b], sum_l[b]));
            /* flat lanes returned before the search */
            positive[b] = _mm256_andnot_ps(r[b].flat, _mm256_cmp_ps(D, zero, _CMP_GT_OQ));
            any |= v_any(positive[b]);
            this_scale[b] = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w[b], sum_xl[b]), _mm256_mul_ps(sum_x[b], sum_l[b])), D);
            this_min[b] = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2[b], sum_x[b]), _mm256_mul_ps(sum_l[b], sum_xl[b])), D);
            const V min_above = _mm256_cmp_ps(this_min[b], zero, _CMP_GT_OQ);
            this_min[b] = SEL(min_above, zero, this_min[b]);
            this_scale[b] = SEL(min_above, _mm256_div_ps(sum_xl[b], sum_l2[b]), this_scale[b]);
            err[b] = zero;
        }
        if (!any) continue;
        for (int i = 0; i < 32; i++) {
            for (int b = 0; b < NB; b++) {
                V diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale[b], laux[b][i]), this_min[b]), x[b][i]);
                diff = _mm256_mul_ps(diff, diff);
                err[b] = _mm256_add_ps(err[b], _mm256_mul_ps(w[b][i], diff));
            }
        }
        for (int b = 0; b < NB; b++) {
            const V better = _mm256_and_ps(positive[b], _mm256_cmp_ps(err[b], best[b], _CMP_LT_OQ));
            best[b] = SEL(better, err[b], best[b]);
            scale[b] = SEL(better, this_scale[b], scale[b]);
            r[b].iscale = SEL(better, iscale[b], r[b].iscale);
            r[b].shift = SEL(better, mn[b], r[b].shift);
            mn[b] = SEL(better, this_min[b], mn[b]);
        }
    }
    for (int b = 0; b < NB; b++) {
        r[b].scale = SEL(r[b].flat, zero, scale[b]);
        r[b].the_min = _mm256_xor_ps(mn[b], _mm256_set1_ps(-0.0f));
    }
}

/* the quants a search left in one lane's sub-block of n values (the reference keeps them where the
   sub-block's final scale is zero) */
KERNEL static void search_quants(const float *x, int n, float iscale, float shift, int flat, int lo, int hi,
                                 int32_t *L) {
    for (int i = 0; i < n; i += 8) {
        VI l = _mm256_setzero_si256();
        if (!flat)
            l = v_clamp(v_nearest(_mm256_mul_ps(_mm256_set1_ps(iscale), _mm256_sub_ps(_mm256_loadu_ps(x + i),
                                                                                     _mm256_set1_ps(shift)))), lo, hi);
        _mm256_storeu_si256((VI *)(L + i), l);
    }
}

/* ------------------------------------------------------------------------------ make_qp_quants */

/* make_qp_quants(8, 63, x, L, w) lane by lane: the 6-bit quants of the eight sub-block scales (or
   mins) of a super-block, weighted by w; returns the super-block scale. L: uint8 values in int32s. */
KERNEL static V scale_quants(const V x[8], const V w[8], VI L[8]) {
    const int nmax = 63;
    const V zero = _mm256_setzero_ps();
    const VI byte = _mm256_set1_epi32(0xFF);
    V max = zero;
    for (int i = 0; i < 8; i++) max = _mm256_max_ps(max, x[i]); /* MAX(max, x) */
    const V all_zero = _mm256_cmp_ps(max, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);
    V iscale = _mm256_div_ps(_mm256_set1_ps((float)nmax), max);
    for (int i = 0; i < 8; i++) L[i] = _mm256_and_si256(v_nearest(_mm256_mul_ps(iscale, x[i])), byte);
    const V scale = _mm256_div_ps(_mm256_set1_ps(1.f), iscale);
    V best = zero;
    for (int i = 0; i < 8; i++) {
        const V diff = _mm256_sub_ps(x[i], _mm256_mul_ps(scale, _mm256_cvtepi32_ps(L[i])));
        best = _mm256_add_ps(best, _mm256_mul_ps(_mm256_mul_ps(w[i], diff), diff));
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        float step = 0.1f * (float)is;
        step = step + (float)nmax;
        const V iscale_is = _mm256_div_ps(_mm256_set1_ps(step), max);
        const V scale_is = _mm256_div_ps(_mm256_set1_ps(1.f), iscale_is);
        V mse = zero;
        for (int i = 0; i < 8; i++) {
            const VI l = _mm256_min_epi32(_mm256_set1_epi32(nmax), v_nearest(_mm256_mul_ps(iscale_is, x[i])));
            const V diff = _mm256_sub_ps(x[i], _mm256_mul_ps(scale_is, _mm256_cvtepi32_ps(l)));
            mse = _mm256_add_ps(mse, _mm256_mul_ps(_mm256_mul_ps(w[i], diff), diff));
        }
        const V better = _mm256_cmp_ps(mse, best, _CMP_LT_OQ);
        best = SEL(better, mse, best);
        iscale = SEL(better, iscale_is, iscale);
    }
    V sumlx = zero, suml2 = zero;
    V wx[8];
    for (int i = 0; i < 8; i++) {
        const VI l = _mm256_min_epi32(_mm256_set1_epi32(nmax), v_nearest(_mm256_mul_ps(iscale, x[i])));
        L[i] = _mm256_and_si256(l, byte);
        const V lf = _mm256_cvtepi32_ps(l);
        wx[i] = _mm256_mul_ps(w[i], x[i]);
        sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(wx[i], lf));
        suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w[i], lf), lf));
    }
    /* A lane whose pass changed nothing would change nothing in the next pass either: running passes
       until no lane changes is the reference's "if (!n_changed) break" in every lane. */
    for (int itry = 0; itry < 5; ++itry) {
        V changed = zero;
        for (int i = 0; i < 8; i++) {
            const V li = _mm256_cvtepi32_ps(L[i]);
            V slx = _mm256_sub_ps(sumlx, _mm256_mul_ps(wx[i], li));
            V sl2 = _mm256_sub_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w[i], li), li));
            const V ok = _mm256_and_ps(_mm256_cmp_ps(slx, zero, _CMP_GT_OQ), _mm256_cmp_ps(sl2, zero, _CMP_GT_OQ));
            const VI new_l = _mm256_min_epi32(_mm256_set1_epi32(nmax),
                                              v_nearest(_mm256_div_ps(_mm256_mul_ps(x[i], sl2), slx)));
            const V differs = _mm256_xor_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(new_l, L[i])),
                                            _mm256_castsi256_ps(_mm256_set1_epi32(-1)));
            const V nf = _mm256_cvtepi32_ps(new_l);
            slx = _mm256_add_ps(slx, _mm256_mul_ps(wx[i], nf));
            sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w[i], nf), nf));
            const V gain = _mm256_cmp_ps(_mm256_mul_ps(_mm256_mul_ps(slx, slx), suml2),
                                         _mm256_mul_ps(_mm256_mul_ps(sumlx, sumlx), sl2), _CMP_GT_OQ);
            const V take = _mm256_andnot_ps(all_zero, _mm256_and_ps(ok, _mm256_and_ps(differs, gain)));
            L[i] = _mm256_castps_si256(SEL(take, _mm256_castsi256_ps(_mm256_and_si256(new_l, byte)),
                                           _mm256_castsi256_ps(L[i])));
            sumlx = SEL(take, slx, sumlx);
            suml2 = SEL(take, sl2, suml2);
            changed = _mm256_or_ps(changed, take);
        }
        if (!v_any(changed)) break;
    }
    for (int i = 0; i < 8; i++) L[i] = _mm256_andnot_si256(_mm256_castps_si256(all_zero), L[i]);
    const V result = SEL(_mm256_cmp_ps(suml2, zero, _CMP_GT_OQ), _mm256_div_ps(sumlx, suml2), zero);
    return SEL(all_zero, zero, result);
}

/* ------------------------------------------------------------------------------- Q4_K and Q5_K */

/* The scales and mins of a super-block's eight sub-blocks, 6 bits each, in the reference's 12 bytes */
static void pack_scales(const uint8_t ls[8], const uint8_t lm[8], uint8_t out[12]) {
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            out[j] = ls[j];
            out[j + 4] = lm[j];
        } else {
            out[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            out[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            out[j - 0] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

static void unpack_scale(int j, const uint8_t q[12], uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* One group of eight super-blocks as Q4_K or Q5_K. rows[k]: lane k's 256 values; qw[k]: its
   importance weights or NULL (then all are NULL); out[k]: its block. Returns the lanes not promised. */
KERNEL static int encode_q45(int type, const float *const rows[GROUP], const float *const qw[GROUP],
                             uint8_t *const out[GROUP]) {
    const int nmax = type == TYPE_Q4_K ? 15 : 31;
    const int weighted = qw[0] != NULL;
    /* ref: make_qkx2_quants(-1, 0.1, 20) for Q4_K, (-0.5, 0.1, 15) for Q5_K; impl: make_qkx3_quants(-0.9, 0.05, 36) */
    const SearchParams params = weighted ? (SearchParams){nmax, -0.9f, 0.05f, 36, 1}
                                         : type == TYPE_Q4_K ? (SearchParams){nmax, -1.f, 0.1f, 20, 0}
                                                             : (SearchParams){nmax, -0.5f, 0.1f, 15, 0};
    V x[QK_K], w[QK_K], q[QK_K];
    V bad = gather_lanes(rows, x);
    if (weighted) bad = _mm256_or_ps(bad, gather_lanes(qw, q));

    V sw[8];
    if (weighted) {
        V sum_x2 = _mm256_setzero_ps();
        for (int l = 0; l < QK_K; ++l) sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(x[l], x[l]));
        const V sigma2 = _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(2.f), sum_x2), _mm256_set1_ps((float)QK_K));
        for (int j = 0; j < 8; ++j) {
            V sumw = _mm256_setzero_ps();
            for (int l = 32 * j; l < 32 * j + 32; ++l) {
                w[l] = _mm256_mul_ps(q[l], _mm256_sqrt_ps(_mm256_add_ps(sigma2, _mm256_mul_ps(x[l], x[l]))));
                sumw = _mm256_add_ps(sumw, w[l]);
            }
            sw[j] = sumw;
        }
    } else {
        for (int j = 0; j < 8; ++j) {
            V sum_x2 = _mm256_setzero_ps();
            for (int l = 32 * j; l < 32 * j + 32; ++l) sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(x[l], x[l]));
            const V av_x = _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps(32.f)));
            for (int l = 32 * j; l < 32 * j + 32; ++l) w[l] = _mm256_add_ps(av_x, v_abs(x[l]));
        }
    }

    Search s[8];
    V scales[8], mins[8];
    for (int j = 0; j < 8; j += NB) {
        const V *xs[NB], *ws[NB];
        for (int b = 0; b < NB; b++) {
            xs[b] = x + 32 * (j + b);
            ws[b] = w + 32 * (j + b);
        }
        min_scale_search(xs, ws, &params, s + j);
    }
    for (int j = 0; j < 8; ++j) {
        scales[j] = s[j].scale;
        mins[j] = s[j].the_min;
    }

    /* per lane: the 6-bit scales and mins, and the super-block's d and dmin */
    uint8_t ls[GROUP][8], lm[GROUP][8];
    float d_block[GROUP], m_block[GROUP];
    if (weighted) {
        VI Ls[8], Lm[8];
        _mm256_storeu_ps(d_block, scale_quants(scales, sw, Ls));
        _mm256_storeu_ps(m_block, scale_quants(mins, sw, Lm));
        for (int j = 0; j < 8; ++j) {
            int32_t a[GROUP], b[GROUP];
            _mm256_storeu_si256((VI *)a, Ls[j]);
            _mm256_storeu_si256((VI *)b, Lm[j]);
            for (int k = 0; k < GROUP; ++k) {
                uint8_t sk = (uint8_t)a[k], mk = (uint8_t)b[k];
                if (type == TYPE_Q5_K) { /* Q5_K caps them at 63 here, Q4_K does not */
                    sk = sk < 63 ? sk : 63;
                    mk = mk < 63 ? mk : 63;
                }
                ls[k][j] = sk;
                lm[k][j] = mk;
            }
        }
    } else {
        float sc[8][GROUP], mi[8][GROUP];
        for (int j = 0; j < 8; ++j) {
            _mm256_storeu_ps(sc[j], scales[j]);
            _mm256_storeu_ps(mi[j], mins[j]);
        }
        for (int k = 0; k < GROUP; ++k) {
            float max_scale = 0, max_min = 0;
            for (int j = 0; j < 8; ++j) {
                if (sc[j][k] > max_scale) max_scale = sc[j][k];
                if (mi[j][k] > max_min) max_min = mi[j][k];
            }
            const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
            const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
            for (int j = 0; j < 8; ++j) {
                uint8_t a = (uint8_t)nearest(inv_scale * sc[j][k]);
                uint8_t b = (uint8_t)nearest(inv_min * mi[j][k]);
                ls[k][j] = a < 63 ? a : 63;
                lm[k][j] = b < 63 ? b : 63;
            }
            d_block[k] = max_scale / 63.f;
            m_block[k] = max_min / 63.f;
        }
    }

    /* what each search left, for sub-blocks whose final scale is zero */
    float s_iscale[8][GROUP], s_shift[8][GROUP];
    int32_t s_flat[8][GROUP];
    for (int j = 0; j < 8; ++j) {
        _mm256_storeu_ps(s_iscale[j], s[j].iscale);
        _mm256_storeu_ps(s_shift[j], s[j].shift);
        _mm256_storeu_si256((VI *)s_flat[j], _mm256_castps_si256(s[j].flat));
    }

    for (int k = 0; k < GROUP; ++k) {
        uint8_t *y = out[k];
        const float *xk = rows[k];
        uint8_t scales_packed[12];
        pack_scales(ls[k], lm[k], scales_packed);
        const uint16_t d16 = to_half(d_block[k]), dmin16 = to_half(m_block[k]);
        memcpy(y, &d16, 2);
        memcpy(y + 2, &dmin16, 2);
        memcpy(y + 4, scales_packed, 12);
        int32_t L[QK_K];
        for (int j = 0; j < 8; ++j) {
            uint8_t sc, m;
            unpack_scale(j, scales_packed, &sc, &m);
            const float d = from_half(d16) * sc;
            if (!d) {
                search_quants(xk + 32 * j, 32, s_iscale[j][k], s_shift[j][k], s_flat[j][k] != 0, 0, nmax, L + 32 * j);
                continue;
            }
            const float dm = from_half(dmin16) * m;
            const V vd = _mm256_set1_ps(d), vdm = _mm256_set1_ps(dm);
            for (int i = 0; i < 32; i += 8) {
                const V t = _mm256_div_ps(_mm256_add_ps(_mm256_loadu_ps(xk + 32 * j + i), vdm), vd);
                _mm256_storeu_si256((VI *)(L + 32 * j + i), v_clamp(v_nearest(t), 0, nmax));
            }
        }
        const VI low4 = _mm256_set1_epi8(0xF);
        if (type == TYPE_Q4_K) {
            for (int g = 0; g < 4; ++g) {
                const int32_t *a = L + 64 * g, *b = a + 32;
                const VI lo = pack_bytes(_mm256_loadu_si256((const VI *)a), _mm256_loadu_si256((const VI *)(a + 8)),
                                         _mm256_loadu_si256((const VI *)(a + 16)), _mm256_loadu_si256((const VI *)(a + 24)));
                const VI hi = pack_bytes(_mm256_loadu_si256((const VI *)b), _mm256_loadu_si256((const VI *)(b + 8)),
                                         _mm256_loadu_si256((const VI *)(b + 16)), _mm256_loadu_si256((const VI *)(b + 24)));
                _mm256_storeu_si256((VI *)(y + 16 + 32 * g), _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)));
            }
        } else {
            VI qh = _mm256_setzero_si256();
            const VI one = _mm256_set1_epi8(1);
            for (int g = 0; g < 4; ++g) {
                const int32_t *a = L + 64 * g, *b = a + 32;
                const VI lo = pack_bytes(_mm256_loadu_si256((const VI *)a), _mm256_loadu_si256((const VI *)(a + 8)),
                                         _mm256_loadu_si256((const VI *)(a + 16)), _mm256_loadu_si256((const VI *)(a + 24)));
                const VI hi = pack_bytes(_mm256_loadu_si256((const VI *)b), _mm256_loadu_si256((const VI *)(b + 8)),
                                         _mm256_loadu_si256((const VI *)(b + 16)), _mm256_loadu_si256((const VI *)(b + 24)));
                const VI ql = _mm256_or_si256(_mm256_and_si256(lo, low4), _mm256_slli_epi16(_mm256_and_si256(hi, low4), 4));
                _mm256_storeu_si256((VI *)(y + 48 + 32 * g), ql);
                /* fifth bits: bit 2g of qh[l] for the first half, 2g+1 for the second */
                const VI b_lo = _mm256_and_si256(_mm256_srli_epi16(lo, 4), one);
                const VI b_hi = _mm256_and_si256(_mm256_srli_epi16(hi, 4), one);
                qh = _mm256_or_si256(qh, _mm256_slli_epi16(b_lo, 2 * g));
                qh = _mm256_or_si256(qh, _mm256_slli_epi16(b_hi, 2 * g + 1));
            }
            _mm256_storeu_si256((VI *)(y + 16), qh);
        }
    }
    return _mm256_movemask_ps(bad);
}

/* ------------------------------------------------------------------------------------ Q6_K */

/* Q6_K's sub-blocks searched at once */
#define NQ 4


/* make_qx_quants(16, 32, x, L, rmse_type=1, qw) for NQ sub-blocks, lane by lane: the scales; iscale and
   all_zero say which quants each left (nearest(iscale * x) clamped to -32..31, plus 32; or all zero).
   qw: the sub-blocks' importance weights, or NULL. */
KERNEL static void signed_scale_search(const V *const x[NQ], const V *const qw[NQ], V scale_out[NQ],
                                       V iscale_out[NQ], V all_zero[NQ]) {
    const int nmax = 32;
    const V zero = _mm256_setzero_ps();
    const V lo = _mm256_set1_ps((float)-nmax), hi = _mm256_set1_ps((float)(nmax - 1));
    V max[NQ], w[NQ][16], wx[NQ][16];
    for (int b = 0; b < NQ; b++) {
        V amax = zero;
        max[b] = zero;
        for (int i = 0; i < 16; ++i) {
            const V ax = v_abs(x[b][i]);
            const V above = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
            amax = SEL(above, ax, amax);
            max[b] = SEL(above, x[b][i], max[b]);
        }
        all_zero[b] = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);
        for (int i = 0; i < 16; ++i) {
            w[b][i] = qw[b] ? qw[b][i] : _mm256_mul_ps(x[b][i], x[b][i]);
            wx[b][i] = _mm256_mul_ps(w[b][i], x[b][i]);
        }
    }
    /* |iscale * x| <= 32.9 + ulps in every lane that is not all zero (|x| <= |max|): nearest_int is
       round-half-to-even there, and -0 in place of 0 changes none of the sums below */
    V scale[NQ], best[NQ], kept[NQ];
    for (int b = 0; b < NQ; b++) scale[b] = best[b] = kept[b] = zero; /* set by the first trial */
    /* the trial scales in the reference's order: -nmax/max, then -(nmax + 0.1*is)/max for is = -9..9 but 0 */
    for (int trial = 0; trial < 19; ++trial) {
        const int is = trial < 10 ? trial - 10 : trial - 9;
        float step = 0.1f * (float)is;
        step = (float)nmax + step;
        V iscale[NQ], sumlx[NQ], suml2[NQ];
        for (int b = 0; b < NQ; b++) {
            iscale[b] = _mm256_div_ps(_mm256_set1_ps(trial == 0 ? (float)-nmax : -step), max[b]);
            sumlx[b] = suml2[b] = zero;
        }
        for (int i = 0; i < 16; ++i) {
            for (int b = 0; b < NQ; b++) {
                const V t = _mm256_round_ps(_mm256_mul_ps(iscale[b], x[b][i]), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                const V l = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
                sumlx[b] = _mm256_add_ps(sumlx[b], _mm256_mul_ps(wx[b][i], l));
                suml2[b] = _mm256_add_ps(suml2[b], _mm256_mul_ps(_mm256_mul_ps(w[b][i], l), l));
            }
        }
        for (int b = 0; b < NQ; b++) {
            if (trial == 0) {
                /* suml2 ? sumlx/suml2 : 0 (a NaN suml2 counts as true) */
                scale[b] = SEL(_mm256_cmp_ps(suml2[b], zero, _CMP_NEQ_UQ), _mm256_div_ps(sumlx[b], suml2[b]), zero);
                best[b] = _mm256_mul_ps(scale[b], sumlx[b]);
                kept[b] = iscale[b];
                continue;
            }
            const V better = _mm256_and_ps(_mm256_cmp_ps(suml2[b], zero, _CMP_GT_OQ),
                                           _mm256_cmp_ps(_mm256_mul_ps(sumlx[b], sumlx[b]), _mm256_mul_ps(best[b], suml2[b]), _CMP_GT_OQ));
            const V new_scale = _mm256_div_ps(sumlx[b], suml2[b]);
            scale[b] = SEL(better, new_scale, scale[b]);
            best[b] = SEL(better, _mm256_mul_ps(new_scale, sumlx[b]), best[b]);
            kept[b] = SEL(better, iscale[b], kept[b]);
        }
    }
    for (int b = 0; b < NQ; b++) {
        iscale_out[b] = kept[b];
        scale_out[b] = SEL(all_zero[b], zero, scale[b]);
    }
}

KERNEL static int encode_q6(const float *const rows[GROUP], const float *const qw[GROUP], uint8_t *const out[GROUP]) {
    const int weighted = qw[0] != NULL;
    V x[QK_K], q[QK_K];
    V bad = gather_lanes(rows, x);
    if (weighted) bad = _mm256_or_ps(bad, gather_lanes(qw, q));

    float scales[16][GROUP], kept[16][GROUP];
    int32_t zero_lane[16][GROUP];
    for (int ib = 0; ib < 16; ib += NQ) {
        const V *xs[NQ], *qs[NQ];
        V scale[NQ], iscale[NQ], all_zero[NQ];
        for (int b = 0; b < NQ; b++) {
            xs[b] = x + 16 * (ib + b);
            qs[b] = weighted ? q + 16 * (ib + b) : NULL;
        }
        signed_scale_search(xs, qs, scale, iscale, all_zero);
        for (int b = 0; b < NQ; b++) {
            _mm256_storeu_ps(scales[ib + b], scale[b]);
            _mm256_storeu_ps(kept[ib + b], iscale[b]);
            _mm256_storeu_si256((VI *)zero_lane[ib + b], _mm256_castps_si256(all_zero[b]));
        }
    }

    for (int k = 0; k < GROUP; ++k) {
        uint8_t *y = out[k];
        const float *xk = rows[k];
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < 16; ++ib) {
            const float abs_scale = fabsf(scales[ib][k]);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scales[ib][k];
            }
        }
        if (max_abs_scale < 1e-15f) {
            memset(y, 0, 210);
            continue;
        }
        const float iscale = -128.f / max_scale;
        const uint16_t d16 = to_half(1 / iscale);
        int8_t sc[16];
        for (int ib = 0; ib < 16; ++ib) {
            const int l = nearest(iscale * scales[ib][k]);
            sc[ib] = (int8_t)(l < 127 ? l : 127);
        }
        int32_t L[QK_K];
        for (int j = 0; j < 16; ++j) {
            const float d = from_half(d16) * sc[j];
            if (!d) {
                search_quants(xk + 16 * j, 16, kept[j][k], 0.f, zero_lane[j][k] != 0, -32, 31, L + 16 * j);
                if (!zero_lane[j][k])
                    for (int i = 16 * j; i < 16 * j + 16; ++i) L[i] += 32;
                continue;
            }
            const V vd = _mm256_set1_ps(d);
            for (int i = 0; i < 16; i += 8) {
                const VI l = v_clamp(v_nearest(_mm256_div_ps(_mm256_loadu_ps(xk + 16 * j + i), vd)), -32, 31);
                _mm256_storeu_si256((VI *)(L + 16 * j + i), _mm256_add_epi32(l, _mm256_set1_epi32(32)));
            }
        }
        const VI low4 = _mm256_set1_epi8(0xF);
        for (int h = 0; h < 2; ++h) {
            const int32_t *base = L + 128 * h;
            VI part[4];
            for (int c = 0; c < 4; ++c) {
                const int32_t *a = base + 32 * c;
                part[c] = pack_bytes(_mm256_loadu_si256((const VI *)a), _mm256_loadu_si256((const VI *)(a + 8)),
                                     _mm256_loadu_si256((const VI *)(a + 16)), _mm256_loadu_si256((const VI *)(a + 24)));
            }
            const VI ql0 = _mm256_or_si256(_mm256_and_si256(part[0], low4), _mm256_slli_epi16(_mm256_and_si256(part[2], low4), 4));
            const VI ql1 = _mm256_or_si256(_mm256_and_si256(part[1], low4), _mm256_slli_epi16(_mm256_and_si256(part[3], low4), 4));
            _mm256_storeu_si256((VI *)(y + 64 * h), ql0);
            _mm256_storeu_si256((VI *)(y + 64 * h + 32), ql1);
            VI qh = _mm256_setzero_si256();
            const VI two_bits = _mm256_set1_epi8(3);
            for (int c = 0; c < 4; ++c)
                qh = _mm256_or_si256(qh, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(part[c], 4), two_bits), 2 * c));
            _mm256_storeu_si256((VI *)(y + 128 + 32 * h), qh);
        }
        memcpy(y + 192, sc, 16);
        memcpy(y + 208, &d16, 2);
    }
    return _mm256_movemask_ps(bad);
}

/* ------------------------------------------------------------------------------------ driver */

static const float ZERO_BLOCK[QK_K];

/* Encode nblocks super-blocks of x (rows of n_per_row values) into y; qw: n_per_row importance weights
   or NULL. odd[b] = 1 for each super-block not promised (the caller redoes those with ggml). */
KERNEL static Py_ssize_t encode(int type, const float *x, uint8_t *y, Py_ssize_t nblocks, Py_ssize_t n_per_row,
                                const float *qw, uint8_t *odd) {
    const Py_ssize_t size = block_bytes(type), per_row = n_per_row / QK_K;
    uint8_t spare[GROUP][210];
    Py_ssize_t count = 0;
    for (Py_ssize_t b = 0; b < nblocks; b += GROUP) {
        const float *rows[GROUP], *weights[GROUP];
        uint8_t *out[GROUP];
        for (int k = 0; k < GROUP; ++k) {
            const int real = b + k < nblocks;
            rows[k] = real ? x + (b + k) * QK_K : ZERO_BLOCK;
            weights[k] = qw == NULL ? NULL : real ? qw + ((b + k) % per_row) * QK_K : ZERO_BLOCK;
            out[k] = real ? y + (b + k) * size : spare[k];
        }
        const int bad = type == TYPE_Q6_K ? encode_q6(rows, weights, out) : encode_q45(type, rows, weights, out);
        for (int k = 0; k < GROUP && b + k < nblocks; ++k) {
            odd[b + k] = (bad >> k) & 1;
            count += odd[b + k];
        }
    }
    return count;
}
#else
static int cpu_ok(void) { return 0; }
static Py_ssize_t encode(int type, const float *x, uint8_t *y, Py_ssize_t nblocks, Py_ssize_t n_per_row,
                         const float *qw, uint8_t *odd) {
    (void)type; (void)x; (void)y; (void)n_per_row; (void)qw;
    memset(odd, 1, (size_t)nblocks);
    return nblocks;
}
#endif

static PyObject *available(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyBool_FromLong(cpu_ok());
}

static PyObject *quantize(PyObject *self, PyObject *args) {
    (void)self;
    int type;
    Py_ssize_t n_per_row;
    Py_buffer src, dst, odd, weights = {0};
    PyObject *weights_obj;
    if (!PyArg_ParseTuple(args, "iy*w*nOw*:quantize", &type, &src, &dst, &n_per_row, &weights_obj, &odd))
        return NULL;
    PyObject *result = NULL;
    const int weighted = weights_obj != Py_None;
    if (weighted && PyObject_GetBuffer(weights_obj, &weights, PyBUF_SIMPLE) != 0)
        goto done;
    const Py_ssize_t size = block_bytes(type);
    const Py_ssize_t values = src.len / (Py_ssize_t)sizeof(float);
    const Py_ssize_t nblocks = values / QK_K;
    if (size == 0) {
        PyErr_Format(PyExc_ValueError, "kquants: type %d is not Q4_K, Q5_K or Q6_K", type);
    } else if (n_per_row <= 0 || n_per_row % QK_K != 0 || src.len % (Py_ssize_t)sizeof(float) != 0
               || values % n_per_row != 0 || dst.len != nblocks * size || odd.len != nblocks
               || (weighted && weights.len != n_per_row * (Py_ssize_t)sizeof(float))) {
        PyErr_Format(PyExc_ValueError,
                     "kquants: %zd source bytes, rows of %zd, %zd output bytes, %zd flags and %zd weight bytes "
                     "do not match", src.len, n_per_row, dst.len, odd.len, weighted ? weights.len : (Py_ssize_t)0);
    } else if (!cpu_ok()) {
        PyErr_SetString(PyExc_RuntimeError, "kquants: this CPU has no AVX2/F16C");
    } else {
        Py_ssize_t count;
        Py_BEGIN_ALLOW_THREADS
        count = encode(type, (const float *)src.buf, (uint8_t *)dst.buf, nblocks, n_per_row,
                       weighted ? (const float *)weights.buf : NULL, (uint8_t *)odd.buf);
        Py_END_ALLOW_THREADS
        result = PyLong_FromSsize_t(count);
    }
done:
    if (weighted && weights.obj != NULL) PyBuffer_Release(&weights);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&odd);
    return result;
}

static PyMethodDef methods[] = {
    {"available", available, METH_NOARGS, "available() -> bool: whether this CPU can run the encoders"},
    {"quantize", quantize, METH_VARARGS,
     "quantize(type, src, dst, n_per_row, weights, odd) -> int: encode float32 src (rows of n_per_row values,\n"
     "a multiple of 256) as ggml type 12 (Q4_K), 13 (Q5_K) or 14 (Q6_K) into dst, with n_per_row importance\n"
     "weights or None; odd gets one byte per 256-value block, 1 where the block may differ from ggml's\n"
     "reference encoder (redo it with ggml). Returns how many blocks are flagged."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_kquants", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kquants(void) { return PyModule_Create(&module); }
