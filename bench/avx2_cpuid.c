/* An AVX2-only CPU as every library in the process sees it, on an AVX-512 machine.

   LD_PRELOAD this library (bench/avx2_cpuid.py builds it): its constructor makes the CPUID
   instruction fault for the process (Linux's ARCH_SET_CPUID, on CPUs with CPUID faulting) and
   answers each fault with the real CPUID's answer minus AVX-512, AMX and AVX-VNNI. Libraries
   that choose their kernels by CPUID (YNNPACK and XNNPACK, which read none of the ISA
   variables; oneDNN, MKL, OpenBLAS, LLVM's host detection in XLA) then pick their AVX2 / FMA3
   code. Only what runs before the constructor (the dynamic loader's and glibc's own choices,
   such as memcpy's) and /proc/cpuinfo keep the real CPU. The setting is inherited by threads
   and reset by execve; children get it again through LD_PRELOAD. */

#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static struct sigaction previous_segv;  /* whoever handled SIGSEGV before us */

static long arch_prctl(int code, unsigned long value) { return syscall(SYS_arch_prctl, code, value); }

static void real_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]) {
    arch_prctl(ARCH_SET_CPUID, 1);
    __asm__ volatile("cpuid" : "=a"(out[0]), "=b"(out[1]), "=c"(out[2]), "=d"(out[3])
                     : "a"(leaf), "c"(subleaf));
    arch_prctl(ARCH_SET_CPUID, 0);
}

static void mask(uint32_t leaf, uint32_t subleaf, uint32_t r[4]) {
    if (leaf == 7 && subleaf == 0) {
        /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
                  (1u << 30) | (1u << 31));
        /* ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512_FP16 23, AMX-TILE 24,
           AMX-INT8 25 */
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
                  (1u << 25));
    } else if (leaf == 7 && subleaf == 1) {
        /* EAX: AVX-VNNI 4, AVX512_BF16 5, AMX-FP16 21 */
        r[0] &= ~((1u << 4) | (1u << 5) | (1u << 21));
    } else if (leaf == 0xd && subleaf == 0) {
        /* EAX: the XSAVE state components the OS may enable; AVX-512's are 5, 6, 7, AMX's 17, 18 */
        r[0] &= ~((1u << 5) | (1u << 6) | (1u << 7) | (1u << 17) | (1u << 18));
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *regs = uc->uc_mcontext.gregs;
    const unsigned char *pc = (const unsigned char *)regs[REG_RIP];
    if (info->si_code == SI_KERNEL && pc[0] == 0x0f && pc[1] == 0xa2) {  /* cpuid */
        uint32_t leaf = (uint32_t)regs[REG_RAX], subleaf = (uint32_t)regs[REG_RCX], r[4];
        real_cpuid(leaf, subleaf, r);
        mask(leaf, subleaf, r);
        regs[REG_RAX] = r[0], regs[REG_RBX] = r[1], regs[REG_RCX] = r[2], regs[REG_RDX] = r[3];
        regs[REG_RIP] += 2;
        return;
    }
    /* any other fault: as if we were not here */
    if (previous_segv.sa_flags & SA_SIGINFO) {
        previous_segv.sa_sigaction(sig, info, context);
    } else if (previous_segv.sa_handler != SIG_IGN && previous_segv.sa_handler != SIG_DFL) {
        previous_segv.sa_handler(sig);
    } else {
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
}

/* Keep the CPUID handler first whoever installs a SIGSEGV handler later (Python's faulthandler,
   TensorFlow's stack traces): theirs is called for every other fault. */
typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static sigaction_fn real_sigaction(void) {
    static sigaction_fn real;
    if (!real)
        real = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return real;
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig != SIGSEGV)
        return real_sigaction()(sig, act, old);
    if (old)
        *old = previous_segv;
    if (act)
        previous_segv = *act;
    return 0;
}

__attribute__((constructor)) static void start(void) {
    struct sigaction handler;
    memset(&handler, 0, sizeof handler);
    handler.sa_sigaction = on_segv;
    handler.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&handler.sa_mask);
    if (real_sigaction()(SIGSEGV, &handler, &previous_segv) != 0 || arch_prctl(ARCH_SET_CPUID, 0) != 0) {
        static const char message[] = "avx2_cpuid: no CPUID faulting on this CPU or kernel\n";
        ssize_t ignored = write(2, message, sizeof message - 1);
        (void)ignored;
        _exit(3);
    }
}
