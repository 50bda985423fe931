/*-------------------------------------------------------------------------
 *
 * ownership.c
 *	  Which role a message belongs to, and wa_cancel and wa_retry, which
 *	  act only on messages of the caller's own.
 *
 * A message belongs to the role that queued it, recorded by name in
 * whatsapp.message.queued_by:
 *
 * - for wa_send, wa_send_template and wa_send_message, the current_user of
 *	 the call: the role whose EXECUTE privilege let it through.  Called
 *	 from a SECURITY DEFINER function of the application, that is the
 *	 function's owner, as for everything else such a function does;
 * - for a message an Odoo trigger records (odoo.c), the role the session
 *	 acts as (the one set with SET ROLE, else the login role): the
 *	 triggers fire at commit, where no function of the caller runs.
 *
 * A role may cancel or retry a message when it has the privileges of the
 * role that queued it (is that role, or inherits from it), or those of
 * whatsapp_admin; superusers may always.  Messages with no recorded role
 * (queued before version 0.3, or written by hand) are for admins only.
 * A name, not an OID, so that pg_dump and pg_dumpall keep its meaning; a
 * role renamed or dropped leaves its messages to the admins.
 *
 * To see their caller, these functions are SECURITY INVOKER: on entry
 * GetUserId() is the caller's role.  They then take the rights of their
 * owner (the extension's owner) for their work, as SECURITY DEFINER would
 * have, and give them back on the way out.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(wa_cancel);
PG_FUNCTION_INFO_V1(wa_retry);

static SPIPlanPtr plan_owner = NULL;
static SPIPlanPtr plan_cancel = NULL;
static SPIPlanPtr plan_retry = NULL;

void
wa_act_as_owner(FunctionCallInfo fcinfo, WaActingAs *acting)
{
	HeapTuple	tup;
	Oid			owner;

	GetUserIdAndSecContext(&acting->saved_user, &acting->saved_context);
	acting->caller = acting->saved_user;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u",
			 fcinfo->flinfo->fn_oid);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);

	SetUserIdAndSecContext(owner,
						   acting->saved_context | SECURITY_LOCAL_USERID_CHANGE);
}

void
wa_act_as_caller_again(const WaActingAs *acting)
{
	SetUserIdAndSecContext(acting->saved_user, acting->saved_context);
}

bool
wa_may_act_on(Oid caller, const char *queued_by)
{
	Oid			admin = get_role_oid("whatsapp_admin", true);
	Oid			owner;

	if (superuser_arg(caller))
		return true;
	if (OidIsValid(admin) && has_privs_of_role(caller, admin))
		return true;
	if (queued_by == NULL)
		return false;
	owner = get_role_oid(queued_by, true);
	return OidIsValid(owner) && has_privs_of_role(caller, owner);
}

static bool
message_has_column(const char *column)
{
	Oid			nsp = get_namespace_oid("whatsapp", true);
	Oid			rel;

	if (!OidIsValid(nsp))
		return false;
	rel = get_relname_relid("message", nsp);
	return OidIsValid(rel) &&
		get_attnum(rel, column) != InvalidAttrNumber;
}

bool
wa_message_has_queued_by(void)
{
	return message_has_column("queued_by");
}

bool
wa_message_has_phase(void)
{
	return message_has_column("phase");
}

/*
 * Who acts, for the log: the session's user, and the calling role when
 * that is another ("odoo as shop_sender").
 */
static char *
who_acts(Oid caller)
{
	Oid			session = GetSessionUserId();
	char	   *name = GetUserNameFromId(session, false);

	if (session == caller)
		return name;
	return psprintf("%s as %s", name, GetUserNameFromId(caller, false));
}

/* What wa_cancel and wa_retry do. */
typedef enum MessageAction
{
	ACTION_CANCEL,
	ACTION_RETRY
} MessageAction;

/*
 * Cancel or retry message "id" for "caller".  Inside SPI, as the owner.
 * False when there is no such message (in the caller's snapshot) or its
 * state does not allow the action; 42501 when it is not the caller's.
 */
static bool
act_on_message(int64 id, Oid caller, MessageAction action)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2];
	const char *verb = action == ACTION_CANCEL ? "cancel" : "retry";
	char	   *queued_by;
	int			rc;

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(who_acts(caller));

	/* queued_by never changes once the row is written: no lock needed */
	rc = SPI_execute_plan(wa_plan(&plan_owner,
								  "SELECT m.queued_by FROM whatsapp.message m"
								  " WHERE m.id OPERATOR(pg_catalog.=) $1",
								  1, types),
						  values, NULL, false, 1);
	wa_spi_check(rc, SPI_OK_SELECT, "look up the message");
	if (SPI_processed == 0)
		return false;
	queued_by = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (!wa_may_act_on(caller, queued_by))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s whatsapp message " INT64_FORMAT,
						verb, id),
				 queued_by != NULL ?
				 errdetail("The message was queued by another role. Only that role, roles that have its privileges, and members of whatsapp_admin may %s it.",
						   verb) :
				 errdetail("The message was queued before the extension recorded which role queued a message (version 0.3). Only members of whatsapp_admin may %s it.",
						   verb),
				 errhint("Act on messages that this role queued, or ask a member of whatsapp_admin.")));

	if (action == ACTION_CANCEL)
		rc = SPI_execute_plan(wa_plan(&plan_cancel,
									  "WITH c AS ("
									  " UPDATE whatsapp.message m SET state = 'cancelled'"
									  "  WHERE m.id OPERATOR(pg_catalog.=) $1"
									  "    AND m.state OPERATOR(pg_catalog.=) 'queued'"
									  "  RETURNING m.id)"
									  " INSERT INTO whatsapp.log (message_id, event, message)"
									  " SELECT c.id, 'cancel', 'cancelled by '"
									  "  OPERATOR(pg_catalog.||) $2 FROM c",
									  2, types),
							  values, NULL, false, 0);
	else
		rc = SPI_execute_plan(wa_plan(&plan_retry,
									  "WITH r AS ("
									  " UPDATE whatsapp.message m"
									  "  SET state = 'queued', attempts = 0,"
									  "   next_attempt_at = pg_catalog.now(),"
									  "   failure_type = NULL, http_status = NULL,"
									  "   error_code = NULL, error_title = NULL,"
									  "   error_details = NULL, fbtrace_id = NULL,"
									  "   failed_at = NULL"
									  "  WHERE m.id OPERATOR(pg_catalog.=) $1"
									  "    AND m.state OPERATOR(pg_catalog.=) 'failed'"
									  "    AND m.failure_type IS DISTINCT FROM 'phone_invalid'"
									  "    AND m.failure_type IS DISTINCT FROM 'opted_out'"
									  "    AND m.payload IS NOT NULL"
									  "  RETURNING m.id)"
									  " INSERT INTO whatsapp.log (message_id, event, message)"
									  " SELECT r.id, 'retry', 'queued again by '"
									  "  OPERATOR(pg_catalog.||) $2 FROM r",
									  2, types),
							  values, NULL, false, 0);
	wa_spi_check(rc, SPI_OK_INSERT, action == ACTION_CANCEL ?
				 "cancel the message" : "retry the message");
	return SPI_processed > 0;
}

static Datum
act_on_message_call(FunctionCallInfo fcinfo, MessageAction action)
{
	int64		id = PG_GETARG_INT64(0);
	WaActingAs	acting;
	volatile bool done = false;

	wa_act_as_owner(fcinfo, &acting);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "whatsapp could not connect to SPI");
		done = act_on_message(id, acting.caller, action);
		SPI_finish();
	}
	PG_FINALLY();
	{
		wa_act_as_caller_again(&acting);
	}
	PG_END_TRY();

	if (done && action == ACTION_RETRY)
		wa_wake_worker_at_commit();
	PG_RETURN_BOOL(done);
}

/*
 * wa_cancel(id bigint) RETURNS boolean
 *
 * A queued message (also one waiting out a back-off) becomes cancelled;
 * any other state returns false.
 */
Datum
wa_cancel(PG_FUNCTION_ARGS)
{
	return act_on_message_call(fcinfo, ACTION_CANCEL);
}

/*
 * wa_retry(id bigint) RETURNS boolean
 *
 * A failed message becomes queued with a fresh attempt budget, unless it
 * failed as phone_invalid or opted_out; any other state returns false.
 */
Datum
wa_retry(PG_FUNCTION_ARGS)
{
	return act_on_message_call(fcinfo, ACTION_RETRY);
}
