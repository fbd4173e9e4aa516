/* util_train.h — shared support for the training tests (test_train.c,
 * test_elastic_train.c): the tiny model shape, a seeded generator, random
 * weights that carry real gradient, and MoE routes to hold fixed during
 * finite differences. */
#ifndef ST_UTIL_TRAIN_H
#define ST_UTIL_TRAIN_H
#include "train/train.h"
#include <stddef.h>
#include <stdint.h>

/* H 16, 4 Mamba heads in 2 groups of head dim 4, 4 query heads over 2 KV
 * heads, 4 experts top-2, FFNs 12 / 8 / 8, vocabulary 23. */
void tt_make_cfg(st_config *c, const char *pattern);
/* The generator below: seed it once per test binary. */
void tt_seed(uint64_t s);
double tt_urand(void);               /* uniform (0, 1) */
float tt_nrand(void);                /* N(0, 1)        */
void tt_rand_tokens(int32_t *x, int n, int V);
/* st_tmodel_init, then larger-than-init random weights (1-D tensors near 1,
 * routing bias small, A_log / dt_bias / conv left at init). */
void tt_randomize(st_tmodel *m);
/* Routes of the last forward over all MoE layers: length, save, compare. */
size_t tt_route_len(const st_tmodel *m);
void tt_routes_save(const st_tmodel *m, int32_t *save);
int tt_routes_equal(const st_tmodel *m, const int32_t *save);
#endif
