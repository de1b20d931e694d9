#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef void (*sgemm_fn)(int,int,int,int,int,int,float,const float*,int,const float*,int,float,float*,int);
typedef void (*sgemv_fn)(int,int,int,int,float,const float*,int,const float*,int,float,float*,int);
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
// gcc -O2 -o gv gv.c -ldl; OPENBLAS_NUM_THREADS=N ./gv <libopenblas.so.0> H
// modes: 0 cblas_sgemm M=1 (h @ W^T, no shim), 1 cblas_sgemv on [H,4H] transposed, 2 on [4H,H]
int main(int argc,char**argv){
  void*h=dlopen(argv[1],RTLD_NOW|RTLD_LOCAL);
  sgemm_fn f=(sgemm_fn)dlsym(h,"cblas_sgemm"); sgemv_fn g=(sgemv_fn)dlsym(h,"cblas_sgemv");
  int H=atoi(argv[2]),N=4*H; float*w=malloc(4*H*N),*x=malloc(4*H),*y=malloc(4*N);
  for(int i=0;i<H*N;i++)w[i]=(i%7)*0.01f; for(int i=0;i<H;i++)x[i]=0.1f;
  for(int mode=0;mode<3;mode++){
    double best=1e9;
    for(int r=0;r<5;r++){double t=now(); for(int i=0;i<500;i++){
      if(mode==0) f(101,111,111,1,N,H,1.f,x,H,w,N,1.f,y,N);       /* h[1,H] @ Wt[H,4H] */
      else if(mode==1) g(101,112,H,N,1.f,w,N,x,1,1.f,y,1);         /* sgemv trans on [H,4H] */
      else g(101,111,N,H,1.f,w,H,x,1,1.f,y,1);                     /* sgemv notrans on [4H,H] */
    } t=(now()-t)/500; if(t<best)best=t;}
    printf("mode %d: %.1f us  %.1f GB/s\n",mode,best*1e6,4.0*H*N/best/1e9);
  }
}
