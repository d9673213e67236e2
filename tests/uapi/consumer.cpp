// SPDX-License-Identifier: MIT
// The same consumer as consumer.c, compiled as C++.
#include "consumer.c"
