#!/usr/bin/env bash
# The training runs behind the dynamics reproductions in docs/reproductions.md (into runs/dyn/).
# Each command is an ordinary `probe train`; run from the repository root.
set -euo pipefail
OUT=${OUT:-runs/dyn}
P53="--preset nanda-modadd --set p=53 --set train_fraction=0.4 --set model.d_model=64 --set model.d_mlp=256"

# Grokfast (Lee et al. 2024): Kitouni's MLP (p = 53, weight decay 0.03: it groks), with and without the EMA filter
for seed in 0 1 2; do
  for filter in none ema; do
    probe train --preset kitouni-mlp --set seed=$seed --set grokfast.filter=$filter \
        --set stop.after_generalization=100 --set stop.threshold=0.95 --no-progress --out $OUT/grokfast/$filter-seed$seed
  done
done

# Further Grokfast settings, one seed each (filter none vs ema): Kitouni's MLP at lr 1e-3 / weight decay 1, full
# batch and batches of 128; at its own lr with batches of 128; at lr 1e-3 / weight decay 0.01 with batches of 128;
# the EMA filter alone on the shipped transformer at weight decay 0.005 and on Power et al.'s at p = 47
# (batches of 512, weight decay 0.005, Lee et al.'s setting for the algorithmic tasks)
STOP="--set stop.after_generalization=100 --set stop.threshold=0.95 --no-progress"
for f in none ema; do
  probe train --preset kitouni-mlp --set lr=1e-3 --set weight_decay=1 --set steps=8000 --set grokfast.filter=$f $STOP --out $OUT/grokfast-more/lr3-$f
  probe train --preset kitouni-mlp --set lr=1e-3 --set weight_decay=1 --set batch_size=128 --set steps=8000 --set grokfast.filter=$f $STOP --out $OUT/grokfast-more/lr3mb-$f
  probe train --preset kitouni-mlp --set batch_size=128 --set grokfast.filter=$f $STOP --out $OUT/grokfast-more/mb-$f
  probe train --preset kitouni-mlp --set lr=1e-3 --set weight_decay=0.01 --set batch_size=128 --set steps=10000 --set grokfast.filter=$f $STOP --out $OUT/grokfast-more/wd01-$f
done
probe train $P53 --set weight_decay=0.005 --set grokfast.filter=ema --set steps=3000 --set checkpoint.schedule=geometric \
    --set checkpoint.count=30 $STOP --out $OUT/grokfast-more/tf-ema
probe train --preset power-moddiv --set p=47 --set weight_decay=0.005 --set steps=10000 --set grokfast.filter=ema \
    --set checkpoint.count=60 $STOP --out $OUT/grokfast-more/pw-ema

# Lee et al.'s algorithmic setting: x * y mod p, half the table, Power et al.'s two-layer transformer with GELU,
# batches of 512, Adam with L2 weight decay (torch.optim.Adam), lr 1e-3; the EMA filter at weight decay 0.005
# against no filter at 0.005 and at 0 (Lee et al.'s baseline)
LEE="--preset power-moddiv --set task=mul --set optimizer=adam --set model.act=gelu --set steps=3000 --set checkpoint.count=40"
for p in 47 97; do
  probe train $LEE --set p=$p --set weight_decay=0.005 --set grokfast.filter=ema $STOP --out $OUT/grokfast-lee/mul-p$p-ema
  probe train $LEE --set p=$p --set weight_decay=0.005 $STOP --out $OUT/grokfast-lee/mul-p$p-none
done
probe train $LEE --set p=97 --set weight_decay=0 $STOP --out $OUT/grokfast-lee/mul-p97-none-wd0

# Softmax collapse (Prieto et al. 2025): Kitouni's MLP without weight decay at lr 1e-2 for 20,000 steps:
# float32 softmax, StableMax, float32 softmax with orthogonal gradients, and float64 softmax
for variant in "softmax float32 false" "stablemax float32 false" "softmax float32 true" "softmax float64 false"; do
  set -- $variant
  probe train --preset kitouni-mlp --set weight_decay=0 --set lr=1e-2 --set softmax=$1 --set softmax_dtype=$2 \
      --set orthogonal_grad=$3 --set steps=20000 --set checkpoint.schedule=geometric --set checkpoint.count=40 \
      --no-progress --out $OUT/collapse/$1-$2-$3
done

# Ungrokking (Varma et al.): the shipped grokked run, trained on 10% of its training split (and, as a
# control, on all of it), weight decay and optimizer state carried over
probe train --from data/runs/modadd-p53 --with-optimizer --set train_subset=0.1 --set steps=3000 \
    --set checkpoint.schedule=every --set checkpoint.every=50 --no-progress --out $OUT/ungrok/subset0.1
probe train --from data/runs/modadd-p53 --with-optimizer --set steps=3000 \
    --set checkpoint.schedule=every --set checkpoint.every=50 --no-progress --out $OUT/ungrok/control

# Omnigrok: the digits MLP at init scale 8, free and with its weight norm held at 1/8 of the initial norm
probe train --preset omnigrok-digits --no-progress --out $OUT/omnigrok/free
probe train --preset omnigrok-digits --set constraint.relative=0.125 --no-progress --out $OUT/omnigrok/constrained

# Loss spikes (Arn; Power et al.'s configuration at p = 31). The recorded run was started with steps=30000,
# killed at step 10,850 and resumed to 12,000 (--resume --steps 12000); the metric rows equal an uninterrupted
# run's, only the geometric checkpoint steps depend on the budget.
probe train --preset power-moddiv --set p=31 --set steps=12000 --no-progress --out $OUT/spikes/div-p31
