/*-------------------------------------------------------------------------
 *
 * spi_plans.c
 *	  Saved SPI plans and SPI result checks shared by every part.
 *
 * Each part keeps its plans in static variables for the life of the
 * process, prepared on first use inside an SPI connection.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"

/*
 * Prepare sql and keep the plan for the life of the process.  SPI leaves
 * CurrentMemoryContext at its procedure context; the caller's is put back.
 */
SPIPlanPtr
wa_keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	MemoryContext cxt = CurrentMemoryContext;
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	MemoryContextSwitchTo(cxt);
	if (plan == NULL)
		elog(ERROR, "whatsapp could not prepare a query: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "whatsapp could not keep a query plan");
	return plan;
}

/* The plan in *slot, prepared and kept there on first use. */
SPIPlanPtr
wa_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
		*slot = wa_keep_plan(sql, nargs, argtypes);
	return *slot;
}

/* An SPI result other than the expected one is an internal error. */
void
wa_spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "whatsapp: %s: %s", what, SPI_result_code_string(rc));
}
