/*-------------------------------------------------------------------------
 *
 * audit.c
 *	  whatsapp.audit rows written from C: one per admin action of the
 *	  account functions (wa_account_set, COPY whatsapp.account_input,
 *	  wa_account_drop, wa_rotate_key, wa_rebind).
 *
 * The table (see the audit section of the 0.2--0.3 script) is granted to
 * nobody but SELECT to whatsapp_admin: it is written here, by functions
 * that run as the extension's owner, and by whatsapp._audit() for the SQL
 * functions.  A row holds the function and its target (an account name, a
 * key id, the last digits of a number), never a secret or a message body:
 * the callers pass no argument but those.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

static SPIPlanPtr plan_audit = NULL;

/*
 * Append one row: function, and target (may be NULL).  Runs its own SPI
 * level, so it may be called inside or outside SPI.  The library serves
 * every version of the extension: before ALTER EXTENSION UPDATE to 0.3
 * there is no whatsapp.audit, and nothing is written.
 */
void
wa_audit(const char *function, const char *target)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	Oid			nsp = get_namespace_oid("whatsapp", true);

	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("audit", nsp)))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not connect to SPI to write the whatsapp audit")));
	values[0] = CStringGetTextDatum(function);
	if (target != NULL)
		values[1] = CStringGetTextDatum(target);
	else
		nulls[1] = 'n';
	wa_spi_check(SPI_execute_plan(wa_plan(&plan_audit,
										  "INSERT INTO whatsapp.audit (function, target)"
										  " VALUES ($1, $2)", 2, types),
								  values, nulls, false, 0),
				 SPI_OK_INSERT, "audit row");
	SPI_finish();
	MemoryContextSwitchTo(cxt);
}
