set -x
cd /work/main
export PATH=/work/venv/bin:$PATH
for d in 0 2; do
  start=$(date +%s)
  python -m streamstyle train --out /tmp/ab2/d$d --init model/weights/default --device cpu --size 64 --frames 4 \
    --batch 4 --pool 64 --steps 2500 --warmup 20 --lr 2e-3 --ema 0.99 --freeze-dit --exact-latents 1 \
    --refiner-depth $d --checkpoint-every 100000 --quiet 2>&1 | tail -2
  echo "d$d train wall $(( $(date +%s) - start )) s"
done
for d in 0 2; do
  python benchmarks/latent_ceiling.py --weights /tmp/ab2/d$d --size 64 --frames 8 2>&1 | tail -13 > /tmp/ab2/ceil-d$d.txt
done
echo ALLDONE
