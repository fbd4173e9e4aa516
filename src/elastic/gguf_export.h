/*
 * gguf_export.h — write a plain (full-width, already sliced) Nemotron-H
 * checkpoint as one GGUF file in the layout llama.cpp's `nemotron_h` /
 * `nemotron_h_moe` architectures load (docs/gguf.md): hyper-parameters,
 * tensors named and shaped as llama.cpp's converter writes them, and the
 * tokenizer. `starling slice --format gguf` slices a budget first, then calls
 * this on the slice.
 */
#ifndef ST_GGUF_EXPORT_H
#define ST_GGUF_EXPORT_H
#include "starling.h"

typedef struct {
    const char *precision;      /* f32 (default), f16, bf16, q8_0 */
    const char *name;           /* general.name (NULL: "starling") */
    int progress;
    volatile int *cancel;
} st_gguf_export_opts;

st_status st_gguf_export(const st_model *m, const char *path, const st_gguf_export_opts *o);
#endif
