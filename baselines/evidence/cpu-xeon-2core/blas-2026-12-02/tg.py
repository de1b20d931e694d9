import torch, time, sys
torch.set_num_threads(int(sys.argv[1]))
print(torch.__config__.show().split("\n")[:3], [l for l in torch.__config__.show().split(",") if "BLAS" in l])
for (M,N,K) in [(1500,1280,1280),(1500,5120,1280),(1500,1280,5120)]:
    a=torch.randn(M,K); w=torch.randn(N,K)
    torch.nn.functional.linear(a,w)
    best=1e9
    for r in range(3):
        t=time.perf_counter()
        for i in range(10): torch.nn.functional.linear(a,w)
        best=min(best,(time.perf_counter()-t)/10)
    print(f"{M}x{N}x{K}: {best*1e3:.2f} ms {2*M*N*K/best/1e9:.1f} GF/s")
