/*
 * dtype.c — element types as safetensors spells them, and scalar conversion
 * of stored weights to fp32 (portable: no ISA flags; the SIMD kernels have
 * their own converters). Every load goes through memcpy because mmap'd
 * safetensors data may sit at any byte offset.
 */
#include "kernels/kernels.h"
#include "util/util.h"

#include <math.h>
#include <string.h>

static const struct { const char *name; size_t size; } g_dtypes[ST_DT_COUNT] = {
    [ST_DT_F32] = {"F32", 4},         [ST_DT_F16] = {"F16", 2},
    [ST_DT_BF16] = {"BF16", 2},       [ST_DT_F8_E4M3] = {"F8_E4M3", 1},
    [ST_DT_F8_E5M2] = {"F8_E5M2", 1}, [ST_DT_U8] = {"U8", 1},
    [ST_DT_I8] = {"I8", 1},           [ST_DT_I16] = {"I16", 2},
    [ST_DT_U16] = {"U16", 2},         [ST_DT_I32] = {"I32", 4},
    [ST_DT_U32] = {"U32", 4},         [ST_DT_I64] = {"I64", 8},
    [ST_DT_U64] = {"U64", 8},         [ST_DT_F64] = {"F64", 8},
    [ST_DT_BOOL] = {"BOOL", 1},
};

size_t st_dtype_size(st_dtype dt) {
    return (unsigned)dt < ST_DT_COUNT ? g_dtypes[dt].size : 0;
}

/* Sub-byte NVFP4 (not a safetensors dtype) has size 0 and is named for messages. */
const char *st_dtype_name(st_dtype dt) {
    if (dt == ST_DT_NVFP4) return "NVFP4";
    return (unsigned)dt < ST_DT_COUNT ? g_dtypes[dt].name : "?";
}

int st_dtype_from_name(const char *name, st_dtype *dt) {
    if (!name) return -1;
    for (int i = 0; i < ST_DT_COUNT; i++)
        if (strcmp(name, g_dtypes[i].name) == 0) {
            if (dt) *dt = (st_dtype)i;
            return 0;
        }
    return -1;
}

int st_dtype_is_float(st_dtype dt) {
    return dt == ST_DT_F32 || dt == ST_DT_F16 || dt == ST_DT_BF16 || dt == ST_DT_F8_E4M3 ||
           dt == ST_DT_F8_E5M2;
}

/* ------------------------------------------------------------ f16 <-> f32 */

float st_f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0x1f) {
        u = s | 0x7f800000u | (m << 13);             /* inf, NaN (payload kept) */
    } else if (e) {
        u = s | ((e + 112u) << 23) | (m << 13);      /* rebias 15 -> 127 */
    } else if (m == 0) {
        u = s;                                       /* ±0 */
    } else {
        /* subnormal m·2^-24: normalise so the leading 1 lands on bit 10 */
        uint32_t sh = 0;
        while (!(m & 0x400u)) { m <<= 1; sh++; }
        u = s | ((113u - sh) << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t st_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t s = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)                             /* NaN: quiet, keep top payload */
        return (uint16_t)(s | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u)                            /* >= 65520 rounds (to even) to inf */
        return (uint16_t)(s | 0x7c00u);
    if (a >= 0x38800000u) {                          /* normal f16 (>= 2^-14) */
        a += 0xfffu + ((a >> 13) & 1u);              /* round to nearest even at bit 13 */
        return (uint16_t)(s | ((a - (112u << 23)) >> 13));
    }
    uint32_t e = a >> 23;
    if (e < 101) return s;                           /* < 2^-26: rounds to ±0 */
    /* subnormal f16: m = round(v / 2^-24) with the hidden bit restored */
    uint32_t mant = (a & 0x7fffffu) | 0x800000u, shift = 126u - e; /* 14..25 */
    uint32_t m = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (m & 1u))) m++; /* m == 0x400 is the smallest normal */
    return (uint16_t)(s | m);
}

/* ------------------------------------------------------------ fp8 */

/* e4m3fn (no infinities; S.1111.111 is NaN), docs/architecture.md §5.2. Exact values. */
const float st_e4m3_lut[256] = {
    0.0f, 0.001953125f, 0.00390625f, 0.005859375f, 0.0078125f, 0.009765625f, 0.01171875f, 0.013671875f,
    0.015625f, 0.017578125f, 0.01953125f, 0.021484375f, 0.0234375f, 0.025390625f, 0.02734375f, 0.029296875f,
    0.03125f, 0.03515625f, 0.0390625f, 0.04296875f, 0.046875f, 0.05078125f, 0.0546875f, 0.05859375f,
    0.0625f, 0.0703125f, 0.078125f, 0.0859375f, 0.09375f, 0.1015625f, 0.109375f, 0.1171875f,
    0.125f, 0.140625f, 0.15625f, 0.171875f, 0.1875f, 0.203125f, 0.21875f, 0.234375f,
    0.25f, 0.28125f, 0.3125f, 0.34375f, 0.375f, 0.40625f, 0.4375f, 0.46875f,
    0.5f, 0.5625f, 0.625f, 0.6875f, 0.75f, 0.8125f, 0.875f, 0.9375f,
    1.0f, 1.125f, 1.25f, 1.375f, 1.5f, 1.625f, 1.75f, 1.875f,
    2.0f, 2.25f, 2.5f, 2.75f, 3.0f, 3.25f, 3.5f, 3.75f,
    4.0f, 4.5f, 5.0f, 5.5f, 6.0f, 6.5f, 7.0f, 7.5f,
    8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f,
    16.0f, 18.0f, 20.0f, 22.0f, 24.0f, 26.0f, 28.0f, 30.0f,
    32.0f, 36.0f, 40.0f, 44.0f, 48.0f, 52.0f, 56.0f, 60.0f,
    64.0f, 72.0f, 80.0f, 88.0f, 96.0f, 104.0f, 112.0f, 120.0f,
    128.0f, 144.0f, 160.0f, 176.0f, 192.0f, 208.0f, 224.0f, 240.0f,
    256.0f, 288.0f, 320.0f, 352.0f, 384.0f, 416.0f, 448.0f, NAN,
    -0.0f, -0.001953125f, -0.00390625f, -0.005859375f, -0.0078125f, -0.009765625f, -0.01171875f, -0.013671875f,
    -0.015625f, -0.017578125f, -0.01953125f, -0.021484375f, -0.0234375f, -0.025390625f, -0.02734375f, -0.029296875f,
    -0.03125f, -0.03515625f, -0.0390625f, -0.04296875f, -0.046875f, -0.05078125f, -0.0546875f, -0.05859375f,
    -0.0625f, -0.0703125f, -0.078125f, -0.0859375f, -0.09375f, -0.1015625f, -0.109375f, -0.1171875f,
    -0.125f, -0.140625f, -0.15625f, -0.171875f, -0.1875f, -0.203125f, -0.21875f, -0.234375f,
    -0.25f, -0.28125f, -0.3125f, -0.34375f, -0.375f, -0.40625f, -0.4375f, -0.46875f,
    -0.5f, -0.5625f, -0.625f, -0.6875f, -0.75f, -0.8125f, -0.875f, -0.9375f,
    -1.0f, -1.125f, -1.25f, -1.375f, -1.5f, -1.625f, -1.75f, -1.875f,
    -2.0f, -2.25f, -2.5f, -2.75f, -3.0f, -3.25f, -3.5f, -3.75f,
    -4.0f, -4.5f, -5.0f, -5.5f, -6.0f, -6.5f, -7.0f, -7.5f,
    -8.0f, -9.0f, -10.0f, -11.0f, -12.0f, -13.0f, -14.0f, -15.0f,
    -16.0f, -18.0f, -20.0f, -22.0f, -24.0f, -26.0f, -28.0f, -30.0f,
    -32.0f, -36.0f, -40.0f, -44.0f, -48.0f, -52.0f, -56.0f, -60.0f,
    -64.0f, -72.0f, -80.0f, -88.0f, -96.0f, -104.0f, -112.0f, -120.0f,
    -128.0f, -144.0f, -160.0f, -176.0f, -192.0f, -208.0f, -224.0f, -240.0f,
    -256.0f, -288.0f, -320.0f, -352.0f, -384.0f, -416.0f, -448.0f, -NAN,
};

/* ------------------------------------------------------------ bulk conversion */

/* The loops are written per dtype so the compiler can vectorise the common
 * ones (memcpy of a 2/4-byte unit from a char pointer is an unaligned load). */
void st_convert_to_f32(st_dtype dt, const void *src, float *dst, int64_t n, float scale) {
    const unsigned char *p = (const unsigned char *)src;
    if (n <= 0) return;
    if (scale == 0.0f) scale = 1.0f; /* an unset scale means "no scale" (see kernels.h) */
    switch (dt) {
    case ST_DT_F32:
        memcpy(dst, p, (size_t)n * 4);
        break;
    case ST_DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = st_bf16_to_f32(h);
        }
        break;
    case ST_DT_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = st_f16_to_f32(h);
        }
        break;
    case ST_DT_F8_E4M3:
        for (int64_t i = 0; i < n; i++) dst[i] = st_e4m3_lut[p[i]];
        break;
    case ST_DT_F8_E5M2: /* e5m2 is the upper byte of an f16 (IEEE-like, with inf/NaN) */
        for (int64_t i = 0; i < n; i++) dst[i] = st_f16_to_f32((uint16_t)(p[i] << 8));
        break;
    case ST_DT_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
#define CONV_INT(TY, SZ)                                                                     \
    for (int64_t i = 0; i < n; i++) {                                                        \
        TY v;                                                                                \
        memcpy(&v, p + (SZ) * i, SZ);                                                        \
        dst[i] = (float)v;                                                                   \
    }                                                                                        \
    break;
    case ST_DT_U8: CONV_INT(uint8_t, 1)
    case ST_DT_I8: CONV_INT(int8_t, 1)
    case ST_DT_I16: CONV_INT(int16_t, 2)
    case ST_DT_U16: CONV_INT(uint16_t, 2)
    case ST_DT_I32: CONV_INT(int32_t, 4)
    case ST_DT_U32: CONV_INT(uint32_t, 4)
    case ST_DT_I64: CONV_INT(int64_t, 8)
    case ST_DT_U64: CONV_INT(uint64_t, 8)
#undef CONV_INT
    case ST_DT_BOOL:
        for (int64_t i = 0; i < n; i++) dst[i] = p[i] ? 1.0f : 0.0f;
        break;
    default:
        memset(dst, 0, (size_t)n * sizeof(float));
        return;
    }
    if (scale != 1.0f)
        for (int64_t i = 0; i < n; i++) dst[i] *= scale;
}
