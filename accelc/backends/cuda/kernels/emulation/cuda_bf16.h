// accelc CUDA emulation: stands in for the CUDA header of this name (see accelc_cuda_emulation.h).
#pragma once
#include "accelc_cuda_emulation.h"
