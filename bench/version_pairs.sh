#!/bin/sh
# What a change costs hello.php, side by side with PHP-FPM: bench/hardening_cost.py
# --second-only run N times for each of two versions, in alternation (A B B A A B ...),
# each run's tenantfpm/FPM ratio printed as it comes, then both means and their quotient.
#
#   bench/version_pairs.sh OLD_CHECKOUT [N=10] [WHAT=access] [ROUNDS=2] [SECONDS=4]
#
# OLD_CHECKOUT is another checkout whose SAPI is built (make -C sapi OUT=<it>/tenantfpm/libexec).
set -eu
old=$1; n=${2:-10}; what=${3:-access}; rounds=${4:-2}; seconds=${5:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
py="$here/.venv/bin/python"
one() {  # $1: a checkout; prints its ratio
    PYTHONPATH="$1" "$py" "$here/bench/hardening_cost.py" --what "$what" --second-only \
        --rounds "$rounds" --seconds "$seconds" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["ratio_second"])'
}
new_sum=0; old_sum=0; i=0
while [ "$i" -lt "$n" ]; do
    if [ $((i % 2)) -eq 0 ]; then a=$(one "$here"); b=$(one "$old"); else b=$(one "$old"); a=$(one "$here"); fi
    echo "run $((i + 1))/$n: this $a  old $b"
    new_sum=$("$py" -c "print($new_sum + $a)"); old_sum=$("$py" -c "print($old_sum + $b)")
    i=$((i + 1))
done
"$py" -c "n=$n; a=$new_sum/n; b=$old_sum/n; print(f'mean ratio: this {a:.4f}  old {b:.4f}  this/old {a/b:.4f}')"
