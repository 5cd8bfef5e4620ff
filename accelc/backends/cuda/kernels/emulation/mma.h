// accelc CUDA emulation: stands in for the CUDA header of this name (see accelc_emu_wmma.h).
#pragma once
#include "accelc_emu_wmma.h"
