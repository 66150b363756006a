/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Common includes of the cmocka unit tests. */
#ifndef GMFP_UNIT_H
#define GMFP_UNIT_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "gmfp.h"
#include "internal.h"
#endif
