/*-------------------------------------------------------------------------
 *
 * spi_plans.h
 *	  Saved SPI plans and SPI result checks shared by every part
 *	  (spi_plans.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WA_SPI_PLANS_H
#define WA_SPI_PLANS_H

#include "executor/spi.h"

extern SPIPlanPtr wa_keep_plan(const char *sql, int nargs, Oid *argtypes);
extern SPIPlanPtr wa_plan(SPIPlanPtr *slot, const char *sql, int nargs,
						  Oid *argtypes);
extern void wa_spi_check(int rc, int expected, const char *what);

#endif							/* WA_SPI_PLANS_H */
