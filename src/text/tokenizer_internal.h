/*
 * tokenizer_internal.h — tokenizer helpers shared inside starling (CLI, server)
 * but not part of the public API.
 */
#ifndef ST_TOKENIZER_INTERNAL_H
#define ST_TOKENIZER_INTERNAL_H

#include "starling.h"
#include <stdint.h>

/* Special tokens the tokenizer.json post_processor adds around one sequence
 * when Hugging Face's add_special_tokens=True (TemplateProcessing "single",
 * BertProcessing / RobertaProcessing cls+sep; ByteLevel adds nothing).
 * Pointers stay valid until st_tokenizer_free. Fails with ST_ERR_UNSUPPORTED
 * when the post_processor type is one starling does not know. */
st_status st_tok_affixes(const st_tokenizer *t, const int32_t **prefix, int *n_prefix,
                         const int32_t **suffix, int *n_suffix);

/* st_detokenize with the option to drop special added tokens
 * (HF skip_special_tokens). */
st_status st_tok_decode(const st_tokenizer *t, const int32_t *ids, int n, int skip_special,
                        char **out);

/* The GPT-2 byte-level alphabet, one table for the tokenizer and the BPE
 * trainer: byte b is written as code point st_byte_to_cp()[b] (printable
 * Latin-1 bytes as themselves, the other 68 bytes U+0100.. in order), and
 * st_cp_to_byte()[cp] (cp < ST_BYTE_CP_END) is the byte back, or -1. Built
 * once, on first use, under pthread_once. */
#define ST_BYTE_CP_END 324
const uint16_t *st_byte_to_cp(void);
const int16_t *st_cp_to_byte(void);

#endif
