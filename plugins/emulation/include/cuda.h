// CPU emulation stand-in for <cuda.h>: see ../cuda_emu.h.
#pragma once
#include "../cuda_emu.h"
