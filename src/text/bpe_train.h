/*
 * bpe_train.h — byte-level BPE tokenizer training (starling tokenizer-train).
 *
 * Text is cut into pieces with the Nemotron/Tekken Split regex (the one in
 * the model's tokenizer.json), the pieces are counted, and pairs of adjacent
 * symbols are merged most-frequent-first until the vocabulary is full. The
 * result is a standard Hugging Face tokenizer.json: ids 0..15 are the
 * Nemotron 3 special tokens (<unk> <s> </s> ... <|im_start|>=10 <|im_end|>=11
 * <think>=12 </think>=13), ids 16..271 the 256 bytes (GPT-2 byte<->unicode
 * alphabet, byte order), then one id per merge result.
 */
#ifndef ST_BPE_TRAIN_H
#define ST_BPE_TRAIN_H

#include "starling.h"
#include <stddef.h>
#include <stdint.h>

#define ST_BPE_N_SPECIAL 16
#define ST_BPE_BASE (ST_BPE_N_SPECIAL + 256) /* first merge id */

typedef struct {
    int vocab_size;    /* total ids, specials and bytes included (>= 272) */
    int min_frequency; /* a pair seen fewer times than this is never merged (>= 1) */
} st_bpe_opts;

typedef struct {
    int64_t pieces;      /* pre-tokenized pieces counted */
    int64_t bytes;       /* bytes of text counted (special tokens excluded) */
    int64_t words;       /* distinct pieces */
    int merges;          /* merges learned */
    int vocab;           /* ids in the vocabulary (can be < 272 + merges: equal strings share an id) */
    int64_t bpe_tokens;  /* tokens the training pieces take after the merges */
} st_bpe_stats;

typedef struct st_bpe_trainer st_bpe_trainer;

st_status st_bpe_new(const st_bpe_opts *o, st_bpe_trainer **out);
void st_bpe_free(st_bpe_trainer *t);
/* Count the pieces of a UTF-8 text (may be called many times; the special
 * token strings in it are cut out, never learned). Invalid UTF-8: ST_ERR_ARG. */
st_status st_bpe_feed(st_bpe_trainer *t, const char *text, size_t len);
/* Learn the merges from everything fed so far (once). */
st_status st_bpe_train(st_bpe_trainer *t);
void st_bpe_get_stats(const st_bpe_trainer *t, st_bpe_stats *s);
/* Write PATH (tokenizer.json) and, in the same directory, tokenizer_config.json
 * and special_tokens_map.json. */
st_status st_bpe_write(const st_bpe_trainer *t, const char *path);

/* The Split pattern of the Nemotron tokenizer (Tekken family). */
extern const char st_bpe_split_regex[];
extern const char *const st_bpe_specials[ST_BPE_N_SPECIAL];

#endif
