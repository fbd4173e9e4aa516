/* synth.h — deterministic random Nemotron-H checkpoints (see synth.c). */
#ifndef ST_SYNTH_H
#define ST_SYNTH_H
#include "kernels/kernels.h"
#include "starling.h"

typedef struct {
    char pattern[ST_MAX_LAYERS + 1];
    int hidden, vocab;
    int mamba_heads, mamba_head_dim, state, groups;
    int attn_heads, kv_heads, head_dim;
    int experts, top_k, moe_ffn, shared_ffn, ffn;
    st_dtype dtype;     /* BF16, F16 or F32 for the large matrices */
    uint64_t seed;
} st_synth_opts;

/* Fill o from a preset ("default", "bench", "nano8", "big"); -1 for an unknown name. */
int st_synth_preset(const char *name, st_synth_opts *o);
/* Write the checkpoint into dir (created if needed; files written atomically). */
st_status st_synth_write(const char *dir, const st_synth_opts *o);
#endif
