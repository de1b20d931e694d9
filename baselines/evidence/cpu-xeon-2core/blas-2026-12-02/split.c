#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
void cblas_sgemm(int,int,int,int,int,int,float,const float*,int,const float*,int,float,float*,int);
void openblas_set_num_threads(int);
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
typedef struct {int M,N,K,n0,n1; float*a,*b,*c; int bym;} job;
static void* run(void*p){job*j=p; if(j->bym){ int m=j->n1-j->n0; cblas_sgemm(101,111,112,m,j->N,j->K,1.f,j->a+(long)j->n0*j->K,j->K,j->b,j->K,0.f,j->c+(long)j->n0*j->N,j->N);} else {int n=j->n1-j->n0; cblas_sgemm(101,111,112,j->M,n,j->K,1.f,j->a,j->K,j->b+(long)j->n0*j->K,j->K,0.f,j->c+j->n0,j->N);} return 0;}
int main(){ openblas_set_num_threads(1);
 int shapes[][3]={{1500,1280,1280},{1500,5120,1280},{1500,1280,5120}};
 for(int s=0;s<3;s++){int M=shapes[s][0],N=shapes[s][1],K=shapes[s][2];
  float*a=malloc(4L*M*K),*b=malloc(4L*K*N),*c=malloc(4L*M*N); for(long i=0;i<(long)M*K;i++)a[i]=(i%7)*.1f; for(long i=0;i<(long)N*K;i++)b[i]=(i%5)*.1f;
  for(int bym=0;bym<2;bym++){ double best=1e9; for(int r=0;r<4;r++){ double t=now(); for(int it=0;it<5;it++){ pthread_t th[2]; job j[2]; int tot=bym?M:N; for(int i=0;i<2;i++){ j[i]=(job){M,N,K,tot*i/2,tot*(i+1)/2,a,b,c,bym}; pthread_create(&th[i],0,run,&j[i]);} for(int i=0;i<2;i++) pthread_join(th[i],0);} t=(now()-t)/5; if(t<best)best=t;}
   printf("%dx%dx%d split by %s: %.2f ms %.1f GF/s\n",M,N,K,bym?"rows":"cols",best*1e3,2.0*M*N*K/best/1e9);} free(a);free(b);free(c);} }
