/*-------------------------------------------------------------------------
 *
 * dbcommands.c
 *	  Room for the commands that need a database to themselves, and the
 *	  doorbells rung by the commands that add or remove something to serve.
 *
 * DROP DATABASE, CREATE DATABASE ... TEMPLATE, ALTER DATABASE ... RENAME
 * TO and ALTER DATABASE ... SET TABLESPACE wait up to 5 s for the other
 * sessions of the database to leave, then fail.  The worker serving the
 * database is such a session.  So, before one of these runs, this hook
 * asks the worker to stop (SIGTERM: it stops claiming and records the
 * answers in flight, within whatsapp.shutdown_timeout), waits until it is
 * gone, and holds the database: the launcher starts no worker for it while
 * the command runs, nor for WA_RESTART_DELAY_MS after.  A dropped database
 * is then gone, and nothing is sent from it again.
 *
 * Only for a superuser or the database's owner, who may run the command:
 * anyone else's attempt fails on its own and must not stop delivery.
 *
 * After CREATE EXTENSION, CREATE DATABASE and ALTER DATABASE the launcher
 * is woken at commit, so that with whatsapp.database = '*' it looks at
 * once instead of at its next scan.  After DROP EXTENSION and CREATE
 * EXTENSION the worker of this database is woken at commit, so that it
 * notices at once.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include <signal.h>

#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/timestamp.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/*
 * The database a statement needs without other sessions, or InvalidOid.
 * The names are looked up the way the commands look them up.
 */
static Oid
exclusive_target(Node *parsetree)
{
	const char *name = NULL;
	ListCell   *lc;

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			name = ((DropdbStmt *) parsetree)->dbname;
			break;
		case T_CreatedbStmt:
			name = "template1";
			foreach(lc, ((CreatedbStmt *) parsetree)->options)
			{
				DefElem    *d = lfirst_node(DefElem, lc);

				/* TEMPLATE DEFAULT has no argument: template1 */
				if (strcmp(d->defname, "template") == 0 && d->arg != NULL)
					name = defGetString(d);
			}
			break;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				name = ((RenameStmt *) parsetree)->subname;
			break;
		case T_AlterDatabaseStmt:
			foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
			{
				DefElem    *d = lfirst_node(DefElem, lc);

				if (strcmp(d->defname, "tablespace") == 0)
					name = ((AlterDatabaseStmt *) parsetree)->dbname;
			}
			break;
		default:
			break;
	}
	if (name == NULL)
		return InvalidOid;
	return get_database_oid(name, true);
}

/* May this user run the command on the database at all? */
static bool
may_make_room(Oid dboid)
{
	return superuser() || WA_DATABASE_OWNERCHECK(dboid, GetUserId());
}

/* The pid of a worker that is connected to dboid, or 0. */
static pid_t
worker_of(Oid dboid)
{
	pid_t		pid = 0;

	LWLockAcquire(wa_shared->lock, LW_SHARED);
	for (int i = 0; i < wa_shared->nslots; i++)
	{
		WaDbSlot   *slot = &wa_shared->slots[i];

		if (slot->in_use && slot->dboid == dboid && slot->pid != 0)
			pid = slot->pid;
	}
	LWLockRelease(wa_shared->lock);
	return pid;
}

/*
 * Stop the worker of dboid and wait until it has left the database: its
 * drain takes at most whatsapp.shutdown_timeout.  The held database gets
 * no new worker meanwhile.  Interruptible.
 */
static void
stop_worker_of(Oid dboid, const char *command)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   wa_shutdown_timeout + 2000);
	pid_t		pid;
	pid_t		told = 0;

	while ((pid = worker_of(dboid)) != 0 || (told != 0 && BackendPidGetProc(told) != NULL))
	{
		if (pid != 0 && pid != told)
		{
			char	   *name = get_database_name(dboid);

			ereport(LOG,
					(errmsg("whatsapp worker for database \"%s\" stops to make room for %s",
							name ? name : "?", command)));
			if (kill(pid, SIGTERM) != 0 && errno != ESRCH)
				ereport(WARNING,
						(errcode(ERRCODE_SYSTEM_ERROR),
						 errmsg("could not signal the whatsapp worker with PID %d: %m", (int) pid)));
			told = pid;
		}
		if (GetCurrentTimestamp() >= deadline)
		{
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("the whatsapp worker with PID %d did not leave its database in time",
							(int) told),
					 errhint("%s may fail; run it again once the worker has stopped.", command)));
			return;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
wa_process_utility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	NodeTag		tag = nodeTag(parsetree);
	Oid			found = wa_shared ? exclusive_target(parsetree) : InvalidOid;
	volatile Oid target = InvalidOid;
	volatile bool held = false;
	bool		drops_extension;

	drops_extension = (tag == T_DropStmt &&
					   ((DropStmt *) parsetree)->removeType == OBJECT_EXTENSION);
	if (OidIsValid(found) && found != MyDatabaseId && may_make_room(found))
	{
		target = found;
		held = wa_hold_database(found);
	}

	PG_TRY();
	{
		if (OidIsValid(target))
			stop_worker_of(target, GetCommandTagName(CreateCommandTag(parsetree)));
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (held)
			wa_release_database(target, WA_RESTART_DELAY_MS);
	}
	PG_END_TRY();

	switch (tag)
	{
		case T_CreatedbStmt:
		case T_AlterDatabaseStmt:
		case T_RenameStmt:
			wa_wake_launcher_at_commit(InvalidOid);
			break;
		case T_CreateExtensionStmt:
			/* whatsapp itself, or an extension that needs it (CASCADE) */
			if (OidIsValid(get_extension_oid("whatsapp", true)))
			{
				wa_wake_launcher_at_commit(MyDatabaseId);
				wa_wake_worker_at_commit();
			}
			break;
		case T_DropStmt:
			if (drops_extension && !OidIsValid(get_extension_oid("whatsapp", true)))
				wa_wake_worker_at_commit();
			break;
		default:
			break;
	}
}

void
wa_install_dbcommand_hook(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = wa_process_utility;
}
