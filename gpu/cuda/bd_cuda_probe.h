/* Runtime probe of the CUDA backend: how many GPUs this process can see. */
#ifndef BD_CUDA_PROBE_H
#define BD_CUDA_PROBE_H
#ifdef __cplusplus
extern "C" {
#endif
/* Number of visible CUDA devices; 0 when there is no driver or no GPU. */
int bd_cuda_device_count(void);
/* Launches a trivial kernel and checks its result: 0 ok, -1 failure. */
int bd_cuda_probe_kernel(void);
#ifdef __cplusplus
}
#endif
#endif
