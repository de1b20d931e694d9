#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static float *buf; static long n; static int nt; volatile float out[16];
static void* run(void*p){long id=(long)p; long lo=n/nt*id, hi=n/nt*(id+1); __m512 s0=_mm512_setzero_ps(),s1=s0,s2=s0,s3=s0;
 for(long i=lo;i<hi;i+=64){s0=_mm512_add_ps(s0,_mm512_load_ps(buf+i));s1=_mm512_add_ps(s1,_mm512_load_ps(buf+i+16));s2=_mm512_add_ps(s2,_mm512_load_ps(buf+i+32));s3=_mm512_add_ps(s3,_mm512_load_ps(buf+i+48));}
 out[id]=_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0,s1),_mm512_add_ps(s2,s3))); return 0;}
int main(int c,char**v){nt=atoi(v[1]); n=1L<<28; buf=aligned_alloc(64,n*4); for(long i=0;i<n;i++)buf[i]=1;
 for(int r=0;r<4;r++){double t=now(); pthread_t th[16]; for(long i=0;i<nt;i++)pthread_create(&th[i],0,run,(void*)i); for(int i=0;i<nt;i++)pthread_join(th[i],0); t=now()-t; printf("%d threads: %.1f GB/s (%g)\n",nt,n*4/t/1e9,out[0]);} }
