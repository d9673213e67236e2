// SPDX-License-Identifier: MIT
// placeholder: owned by the xenstore helper
#pragma once
