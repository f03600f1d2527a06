#!/usr/bin/env bash
# Session 10, GPU call 1 (issue 13): the deterministic start (history_noise 0) measured and trained.
# (1) the shipped weights with history_noise 0 (export --history-noise 0, nothing else changed) on
# the held-out tables at 512x512 and 1280x720, in the background while (2) the DiT and the refiner
# train together from those weights for 6 minutes (DIT=1, DiT lr 2e-4), then the shift chosen on the
# train split among 0..2 and the held-out tables. The chosen weights are kept on the machine
# (/root/keep1) for a follow-up call. Run from the repository root carrying .whl.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
python3 -m streamstyle export --weights model/weights/default --out /root/hn0 --dtype bf16 --history-noise 0 | tail -1
mkdir -p $OUT/base
nice -n 5 python3 -m streamstyle eval --weights /root/hn0 --seeds 1000000,1000001 --size 512x512,1280x720 \
  --frames 8 --device cuda --quiet --json $OUT/base/held-hn0.json --markdown $OUT/base/held-hn0.md \
  > $OUT/base/held-hn0.log 2>&1 &
bpid=$!
DIT=1 LR=2e-4 SHIFTS="0 1 2" POOL=512 BANK=256 KEEP=/root/keep1 INIT=/root/hn0 \
  timeout 560 bash scripts/gpu-train-refiner.sh $OUT/a 6 /root/hn0 2>&1 | tail -20
wait $bpid
echo "baseline (shipped, history_noise 0):"; grep -E "OVERALL|MEDIAN" $OUT/base/held-hn0.log
(cd $OUT/base && tar cf ../base.tar . ) && rm -rf $OUT/base
tar xOf $OUT/a/reports.tar metrics.jsonl | python3 -c "
import json, sys, statistics as s
r = [json.loads(l) for l in sys.stdin]
print('steps', len(r), 'median frames/s', round(s.median(x['frames_per_s'] for x in r)))
for x in r[:2] + r[len(r)//2:len(r)//2+1] + r[-2:]:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in x.items()})
"
for s in 0 1 2; do echo "held s$s:"; tar xOf $OUT/a/reports.tar held-s$s.log | grep -E "OVERALL|MEDIAN"; done
ls -la $OUT/a /root/keep1
