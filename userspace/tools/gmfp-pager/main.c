// SPDX-License-Identifier: LGPL-2.1-or-later
/* gmfp-pager: serve presence faults for VMMs that attach over a Unix socket. */
#include "pagerd.h"

int main(int argc, char **argv)
{
	return pagerd_main(argc, argv);
}
