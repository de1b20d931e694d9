#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef void (*sgemm_fn)(int,int,int,int,int,int,float,const float*,int,const float*,int,float,float*,int);
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  void*h=dlopen(argv[1],RTLD_NOW|RTLD_LOCAL); if(!h){printf("%s\n",dlerror());return 1;}
  sgemm_fn f=(sgemm_fn)dlsym(h,argv[2]);
  int shapes[][4]={{1500,1280,1280,1},{1500,5120,1280,1},{1500,1280,5120,1},{1500,1500,64,1},{1500,64,1500,0},{2,1024,1024,1},{2,4096,1024,1}};
  for(int s=0;s<7;s++){int M=shapes[s][0],N=shapes[s][1],K=shapes[s][2],tb=shapes[s][3];
    float*a=malloc(sizeof(float)*M*K),*b=malloc(sizeof(float)*K*N),*c=malloc(sizeof(float)*M*N);
    for(long i=0;i<(long)M*K;i++)a[i]=(i%7)*0.1f; for(long i=0;i<(long)K*N;i++)b[i]=(i%5)*0.1f;
    int reps = M<10?2000:(K<100||N<100?200:10);
    f(101,111,tb?112:111,M,N,K,1.f,a,K,b,tb?K:N,0.f,c,N);
    double best=1e9; for(int r=0;r<3;r++){double t=now(); for(int i=0;i<reps;i++) f(101,111,tb?112:111,M,N,K,1.f,a,K,b,tb?K:N,0.f,c,N); t=(now()-t)/reps; if(t<best)best=t;}
    printf("%5d x %5d x %5d %s: %8.3f ms  %6.1f GF/s\n",M,N,K,tb?"B^T":"B  ",best*1e3,2.0*M*N*K/best/1e9);
    free(a);free(b);free(c);}
  return 0;}
