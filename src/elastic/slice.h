/*
 * slice.h — cut a budget out of a checkpoint as a standalone Hugging Face
 * checkpoint: the kept prefix of every ranked axis, layers in skip_layers
 * removed, config.json rewritten with the budget's widths. Streams tensor by
 * tensor (never holds the model), writes into DST.tmp.PID and renames.
 */
#ifndef ST_SLICE_H
#define ST_SLICE_H
#include "starling.h"
#include "kernels/kernels.h"
#include <stdint.h>

typedef struct {
    uint64_t shard_bytes;   /* max data bytes per shard (0: 5 GB)           */
    int force;              /* replace an existing target                  */
    int progress;           /* draw a progress bar on stderr               */
    const char *precision;  /* NULL: keep each tensor's type; "bf16", "f16",
                               "f32": convert the float tensors               */
    volatile int *cancel;   /* set non-zero (e.g. from SIGINT) to abort; the
                               target is then never created                  */
} st_slice_opts;

st_status st_slice(const st_model *m, const st_budget *b, const char *dst, const st_slice_opts *o);
#endif
