/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one static background worker, connected to no
 *	  database, that starts a delivery worker for each database listed in
 *	  whatsapp.database and starts it again when it stops.
 *
 * Why a launcher instead of one static worker per database: a worker
 * connected to a database blocks DROP DATABASE and CREATE DATABASE ...
 * TEMPLATE of it.  After a delivery worker stops (pg_terminate_backend, as
 * Odoo's database manager does before copying a database), the launcher
 * waits WA_RESTART_DELAY before starting it again, which leaves the
 * command room to run; and it never starts a worker for a database that
 * does not exist, so a dropped database does not become a restart loop of
 * FATAL errors.
 *
 * The launcher itself can be terminated too (scripts that terminate every
 * other backend do it); the postmaster restarts it after 5 s.  The new one
 * does not know the workers of the old one, which may still run or drain:
 * it starts none for a slot whose worker is alive, and after that worker
 * leaves it keeps WA_RESTART_DELAY as usual.  The worker also refuses to
 * run beside a live worker of its slot (take_slot() in worker.c).
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "utils/snapmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/timestamp.h"

/* Seconds between a worker's stop and its next start. */
#define WA_RESTART_DELAY_S	10
/* Seconds between two checks for a database that is missing. */
#define WA_MISSING_DB_RETRY_S 5

PGDLLEXPORT void wa_launcher_main(Datum main_arg);

void
wa_register_workers(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "whatsapp");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "wa_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "whatsapp launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "whatsapp launcher");
	worker.bgw_main_arg = (Datum) 0;
	RegisterBackgroundWorker(&worker);
}

static bool
start_worker(int slotno, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "whatsapp");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "wa_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "whatsapp worker for database %s",
			 wa_shared->slots[slotno].datname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "whatsapp worker");
	worker.bgw_main_arg = Int32GetDatum(slotno);
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * Does a database of that name exist?  A heap scan of pg_database, as the
 * autovacuum launcher does: connected to no database, the launcher cannot
 * build relcache entries for the catalog's indexes.
 */
static bool
database_exists(const char *name)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!found && HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (strcmp(NameStr(db->datname), name) == 0 && db->datallowconn)
			found = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return found;
}

/*
 * Is a worker that this launcher did not start alive in the slot?  After
 * the launcher itself was terminated, its successor finds the workers of
 * the previous one still running (or draining): it waits for them to leave
 * instead of starting a second worker for the same database.
 */
static bool
slot_owner_alive(WaDbSlot *slot)
{
	pid_t		pid;

	LWLockAcquire(wa_shared->lock, LW_SHARED);
	pid = slot->pid;
	LWLockRelease(wa_shared->lock);
	return pid != 0 && kill(pid, 0) == 0;
}

void
wa_launcher_main(Datum main_arg)
{
	BackgroundWorkerHandle *handles[WA_MAX_DATABASES] = {0};
	TimestampTz next_start[WA_MAX_DATABASES] = {0};
	bool		warned_missing[WA_MAX_DATABASES] = {0};
	bool		adopted[WA_MAX_DATABASES] = {0};

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (wa_shared == NULL || wa_shared->nslots == 0)
	{
		ereport(LOG,
				(errmsg("whatsapp.database is empty: no database is served"),
				 errhint("Set whatsapp.database to the databases whose messages should be delivered, then restart the server.")));
		for (;;)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH,
							 -1L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			if (ConfigReloadPending)
			{
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
			}
		}
	}

	/* Shared catalogs only: enough to look databases up by name. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("whatsapp launcher");

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		long		sleep_ms = 5000;

		for (int i = 0; i < wa_shared->nslots; i++)
		{
			WaDbSlot   *slot = &wa_shared->slots[i];
			pid_t		pid;

			if (handles[i] != NULL &&
				GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
			{
				pfree(handles[i]);
				handles[i] = NULL;
				next_start[i] = TimestampTzPlusMilliseconds(now, WA_RESTART_DELAY_S * 1000);
			}
			if (handles[i] != NULL)
				continue;
			if (slot_owner_alive(slot))
			{
				/* a predecessor's worker: watch it, then keep the delay */
				adopted[i] = true;
				sleep_ms = Min(sleep_ms, 1000);
				continue;
			}
			if (adopted[i])
			{
				adopted[i] = false;
				next_start[i] = TimestampTzPlusMilliseconds(now, WA_RESTART_DELAY_S * 1000);
			}
			if (now < next_start[i])
			{
				sleep_ms = Min(sleep_ms, (next_start[i] - now) / 1000 + 1);
				continue;
			}
			if (!database_exists(slot->datname))
			{
				if (!warned_missing[i])
					ereport(WARNING,
							(errcode(ERRCODE_UNDEFINED_DATABASE),
							 errmsg("database \"%s\" listed in whatsapp.database does not exist",
									slot->datname),
							 errhint("Create the database, or remove it from whatsapp.database and restart the server.")));
				warned_missing[i] = true;
				LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
				strlcpy(slot->state, "idle: database does not exist", sizeof(slot->state));
				LWLockRelease(wa_shared->lock);
				next_start[i] = TimestampTzPlusMilliseconds(now, WA_MISSING_DB_RETRY_S * 1000);
				continue;
			}
			warned_missing[i] = false;
			if (!start_worker(i, &handles[i]))
			{
				handles[i] = NULL;
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("could not start the whatsapp worker for database \"%s\"",
								slot->datname),
						 errhint("Raise max_worker_processes; each served database needs one worker, plus one for the launcher.")));
				next_start[i] = TimestampTzPlusMilliseconds(now, WA_RESTART_DELAY_S * 1000);
			}
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}
