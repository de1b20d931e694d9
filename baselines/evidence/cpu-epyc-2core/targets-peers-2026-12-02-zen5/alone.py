import json,statistics,sys
inter=json.load(open('tp-2t.json')); alone=json.load(open('ours-alone-2t.json'))
peer={}
for l in open('peer-alone.jsonl'):
    if l.startswith('{'):
        d=json.loads(l); peer[d['workload']]=statistics.median(d['samples_s'])
I={w['id']:(w['variants']['optimized']['stats']['median'],w['peer']['median_s']) for w in inter['workloads'] if 'peer' in w}
A={w['id']:w['variants']['optimized']['stats']['median'] for w in alone['workloads']}
def f(x): return f"{x*1e3:.1f} ms" if x<1 else f"{x:.3f} s"
print(f"{'workload':26s} {'ours interl.':>12s} {'ours alone':>12s} {'peer interl.':>12s} {'peer alone':>12s} {'ratio interl.':>13s} {'ratio alone':>11s}")
for k in I:
    if k in A and k in peer:
        o,p=I[k]; print(f"{k:26s} {f(o):>12s} {f(A[k]):>12s} {f(p):>12s} {f(peer[k]):>12s} {o/p:13.2f} {A[k]/peer[k]:11.2f}")
