/* Q8_0 encoding with the reference's bytes, vectorized.
 *
 * ggml has two Q8_0 encoders: the reference one (ggml_quantize_chunk, what llama-quantize and the
 * gguf package write) is scalar and calls roundf for every value, ~3.3 ns a value here; ggml-cpu's
 * AVX2 one runs at ~0.2 ns but computes 127/max instead of 1/(max/127) and rounds halves to even,
 * so about 2% of the blocks of a bf16 model come out different. This is the reference's
 * arithmetic, step for step in float32 (amax, d = amax/127, id = 1/d, x*id, round half away from
 * zero), eight lanes at a time: ~0.3 ns a value.
 *
 * Blocks this cannot promise to encode as the reference does are counted, and the caller redoes
 * the array with ggml: a NaN or infinity in the block (where the reference's result depends on its
 * loop order), or a scale d that is subnormal (where x*id can leave the int8 range).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define QK 32
#define BLOCK_BYTES 34 /* fp16 d, then 32 int8 */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <float.h>
#include <immintrin.h>

static int cpu_ok(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}

__attribute__((target("avx2,f16c")))
static Py_ssize_t encode(const float *restrict x, uint8_t *restrict y, Py_ssize_t nblocks) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    /* t + copysign(largest float below 0.5, t), truncated, is roundf(t) for every float (checked
       exhaustively on [-130, 130]); adding 0.5 itself would round 0.49999997 up. */
    const __m256 below_half = _mm256_set1_ps(0.49999997f);
    const __m256i lane_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    /* NaN and infinity convert to INT32_MIN, which saturates to -128; finite blocks never reach it */
    const __m256i invalid = _mm256_set1_epi8(-128);
    Py_ssize_t odd = 0;
    for (Py_ssize_t b = 0; b < nblocks; b++, x += QK, y += BLOCK_BYTES) {
        __m256 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t d16 = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        memcpy(y, &d16, sizeof d16);

        const __m256 mul = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 t = _mm256_mul_ps(v[k], mul);
            t = _mm256_add_ps(t, _mm256_or_ps(_mm256_and_ps(t, sign), below_half));
            q[k] = _mm256_cvttps_epi32(t);
        }
        /* the packs work within 128-bit lanes; the permutation puts the 32 bytes back in order */
        __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        packed = _mm256_permutevar8x32_epi32(packed, lane_order);
        odd += (amax != 0.0f && d < FLT_MIN) || _mm256_movemask_epi8(_mm256_cmpeq_epi8(packed, invalid)) != 0;
        _mm256_storeu_si256((__m256i *)(y + 2), packed);
    }
    return odd;
}
#else
static int cpu_ok(void) { return 0; }
static Py_ssize_t encode(const float *x, uint8_t *y, Py_ssize_t nblocks) {
    (void)x; (void)y; return nblocks;
}
#endif

static PyObject *available(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyBool_FromLong(cpu_ok());
}

static PyObject *quantize(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer src, dst;
    if (!PyArg_ParseTuple(args, "y*w*:quantize", &src, &dst))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t nblocks = src.len / (QK * (Py_ssize_t)sizeof(float));
    if (src.len % (QK * (Py_ssize_t)sizeof(float)) != 0 || dst.len != nblocks * BLOCK_BYTES) {
        PyErr_Format(PyExc_ValueError, "q8_0: %zd source bytes and %zd output bytes do not match",
                     src.len, dst.len);
    } else if (!cpu_ok()) {
        PyErr_SetString(PyExc_RuntimeError, "q8_0: this CPU has no AVX2/F16C");
    } else {
        Py_ssize_t odd;
        Py_BEGIN_ALLOW_THREADS
        odd = encode((const float *)src.buf, (uint8_t *)dst.buf, nblocks);
        Py_END_ALLOW_THREADS
        result = PyLong_FromSsize_t(odd);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyMethodDef methods[] = {
    {"available", available, METH_NOARGS, "available() -> bool: whether this CPU can run the encoder"},
    {"quantize", quantize, METH_VARARGS,
     "quantize(src, dst) -> int: encode float32 src (a multiple of 32 values) as Q8_0 blocks into dst;\n"
     "returns how many blocks may differ from ggml's reference encoder (redo the array with it then)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_q8_0", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__q8_0(void) { return PyModule_Create(&module); }
