// mma.h for netspec's CUDA emulator: empty; cuda_emulation.h (included first) defines
// what netspec's kernels use of it.
#pragma once
