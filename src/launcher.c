/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one static background worker, connected to no
 *	  database, that keeps one delivery worker running for each database
 *	  to serve, and follows whatsapp.database when it changes on reload.
 *
 * whatsapp.database is either a list of names, or "*": every database in
 * which the extension is installed.
 *
 * With a list, the launcher starts a worker for each listed database that
 * exists, and waits for the others, looking at pg_database every 5 s (a
 * heap scan of the shared catalog: no connection attempt, so a missing
 * database does not become a restart loop of FATAL errors).
 *
 * With "*", whether a database has the extension can only be learnt
 * inside it.  So the launcher starts a worker for each database that
 * allows connections and is not a template, WA_MAX_CHECKS at a time; the
 * worker looks for the extension at once after connecting and, when there
 * is none, says so in its slot and leaves: no long connection to a
 * database without the extension.  The launcher remembers such a database
 * and starts no worker for it again until something is announced there:
 * the commit of CREATE EXTENSION rings the launcher's doorbell (see
 * dbcommands.c and shared.c), and so does CREATE DATABASE, which may copy
 * a template that has the extension.  pg_database is scanned every 2 s as
 * well, so a database that is dropped or renamed is noticed.  Template
 * databases are never served under "*": a worker connected to a template
 * would block every CREATE DATABASE from it.
 *
 * A worker connected to a database blocks DROP DATABASE and CREATE
 * DATABASE ... TEMPLATE of it.  Those commands make room for themselves
 * (dbcommands.c).  When a worker stops for any other reason
 * (pg_terminate_backend, as Odoo's database manager does before copying a
 * database), the launcher waits WA_RESTART_DELAY_MS before starting it
 * again, which leaves such a command room to run.
 *
 * Each served database costs one background worker.  Shared memory holds
 * max_worker_processes slots; when no background worker can be started
 * (max_worker_processes is shared with parallel query and other
 * extensions), the database is refused with a WARNING, and tried again
 * every WA_RESTART_DELAY_MS: it is served once a worker slot is free.
 * Databases already served keep their workers.
 *
 * The launcher itself can be terminated too (scripts that terminate every
 * other backend do it); the postmaster restarts it after 5 s.  The new one
 * does not know the workers of the old one, which may still run or drain:
 * it starts none for a slot whose worker is alive, and after that worker
 * leaves it keeps WA_RESTART_DELAY_MS as usual.  The worker also refuses
 * to run beside a live worker of its slot (take_slot() in worker.c).
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* Milliseconds between two checks for a listed database that is missing. */
#define WA_MISSING_DB_RETRY_MS	5000
/* With "*": how often pg_database is scanned without a doorbell. */
#define WA_SCAN_INTERVAL_MS		2000
/* With "*": databases checked for the extension at the same time. */
#define WA_MAX_CHECKS			4

PGDLLEXPORT void wa_launcher_main(Datum main_arg);

/* A row of pg_database, as much as the launcher needs. */
typedef struct DbEntry
{
	Oid			oid;
	NameData	name;
	bool		allowconn;
	bool		istemplate;
	bool		invalid;		/* a DROP DATABASE that was interrupted */
} DbEntry;

/* What the launcher knows of a slot and that others need not. */
typedef struct LocalSlot
{
	BackgroundWorkerHandle *handle; /* the worker it started, or NULL */
	bool		adopted;		/* a predecessor's worker runs in the slot */
	pid_t		signalled;		/* the worker told to stop, or 0 */
	bool		retiring;		/* not wanted: give it back once stopped */
	TimestampTz next_start;
	bool		warned_missing;
	bool		warned_refused;
	bool		announced;		/* rung for since its worker started */
} LocalSlot;

/* With "*": a database outside the slots that the launcher knows of. */
typedef struct KnownDb
{
	Oid			oid;			/* hash key */
	bool		absent;			/* its worker found no extension */
	bool		warned;			/* refused for want of a slot: logged */
	bool		seen;			/* in the latest scan */
} KnownDb;

static LocalSlot *local = NULL;
static HTAB *known = NULL;
static MemoryContext pass_context = NULL;

static DbEntry *dbs = NULL;
static int	ndbs = 0;

/* Logged once per state of whatsapp.database. */
static bool logged_empty = false;
static bool logged_all = false;
static bool warned_list_long = false;

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

/* ----------
 * pg_database
 * ----------
 */

/*
 * Read pg_database into dbs.  A heap scan, as the autovacuum launcher
 * does: connected to no database, the launcher cannot build relcache
 * entries for the catalog's indexes.
 */
static void
scan_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int			cap = 64;

	ndbs = 0;
	dbs = MemoryContextAlloc(pass_context, sizeof(DbEntry) * cap);

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		DbEntry    *e;

		if (ndbs == cap)
		{
			cap *= 2;
			dbs = repalloc(dbs, sizeof(DbEntry) * cap);
		}
		e = &dbs[ndbs++];
		e->oid = db->oid;
		e->name = db->datname;
		e->allowconn = db->datallowconn;
		e->istemplate = db->datistemplate;
#ifdef DATCONNLIMIT_INVALID_DB
		e->invalid = (db->datconnlimit == DATCONNLIMIT_INVALID_DB);
#else
		e->invalid = false;
#endif
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(pass_context);
}

static DbEntry *
db_by_oid(Oid oid)
{
	for (int i = 0; i < ndbs; i++)
		if (dbs[i].oid == oid)
			return &dbs[i];
	return NULL;
}

static DbEntry *
db_by_name(const char *name)
{
	for (int i = 0; i < ndbs; i++)
		if (strcmp(NameStr(dbs[i].name), name) == 0)
			return &dbs[i];
	return NULL;
}

/* May a worker connect at all? */
static bool
db_connectable(DbEntry *db)
{
	return db != NULL && db->allowconn && !db->invalid;
}

/* Is it served under "*"? */
static bool
db_served_by_all(DbEntry *db)
{
	return db_connectable(db) && !db->istemplate;
}

/* ----------
 * Slots
 * ----------
 */

/* Is a worker running (or about to) in the slot? */
static bool
worker_alive(int i)
{
	return local[i].handle != NULL || local[i].adopted;
}

/* Take a free slot for a database; -1 when none is free. */
static int
take_free_slot(const char *name, Oid dboid, bool listed)
{
	int			found = -1;

	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < wa_shared->nslots && found < 0; i++)
	{
		WaDbSlot   *slot = &wa_shared->slots[i];

		if (slot->in_use || slot->pid != 0)
			continue;
		found = i;
		slot->in_use = true;
		slot->listed = listed;
		slot->confirmed = false;
		slot->extension_missing = false;
		slot->generation++;
		strlcpy(slot->datname, name, NAMEDATALEN);
		slot->dboid = dboid;
		slot->latch = NULL;
		slot->oldest_queued = 0;
		slot->started_at = 0;
		strlcpy(slot->state, "not started", sizeof(slot->state));
		slot->last_error[0] = '\0';
		pg_atomic_write_u32(&slot->wake_pending, 0);
		pg_atomic_write_u32(&slot->pdf_wait_pending, 0);
		pg_atomic_write_u64(&slot->sent_total, 0);
		pg_atomic_write_u32(&slot->inflight, 0);
		pg_atomic_write_u64(&slot->queue_depth, 0);
		pg_atomic_write_u64(&slot->sent_last_minute, 0);
	}
	LWLockRelease(wa_shared->lock);
	if (found >= 0)
		memset(&local[found], 0, sizeof(LocalSlot));
	return found;
}

/* Give back a slot whose worker has left. */
static void
free_slot(int i)
{
	WaDbSlot   *slot = &wa_shared->slots[i];

	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	slot->in_use = false;
	slot->listed = false;
	slot->confirmed = false;
	slot->extension_missing = false;
	slot->dboid = InvalidOid;
	slot->datname[0] = '\0';
	strlcpy(slot->state, "free", sizeof(slot->state));
	LWLockRelease(wa_shared->lock);
	if (local[i].handle != NULL)
		pfree(local[i].handle);
	memset(&local[i], 0, sizeof(LocalSlot));
}

static void
set_slot_state(int i, const char *state)
{
	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	strlcpy(wa_shared->slots[i].state, state, sizeof(wa_shared->slots[i].state));
	LWLockRelease(wa_shared->lock);
}

/* Ask the worker of a slot to stop (once): it drains, then exits. */
static void
stop_worker(int i)
{
	LocalSlot  *l = &local[i];
	pid_t		pid;

	LWLockAcquire(wa_shared->lock, LW_SHARED);
	pid = wa_shared->slots[i].pid;
	LWLockRelease(wa_shared->lock);

	if (l->handle != NULL)
	{
		if (l->signalled == 0 || (pid != 0 && l->signalled != pid))
			TerminateBackgroundWorker(l->handle);
		l->signalled = pid != 0 ? pid : -1;
	}
	else if (l->adopted && pid != 0 && l->signalled != pid)
	{
		if (kill(pid, SIGTERM) != 0 && errno != ESRCH)
			ereport(LOG,
					(errmsg("could not signal the whatsapp worker with PID %d: %m", (int) pid)));
		l->signalled = pid;
	}
}

/* The slot is not wanted any more: stop its worker, then give it back. */
static void
retire(int i)
{
	local[i].retiring = true;
	if (worker_alive(i))
		stop_worker(i);
	else
		free_slot(i);
}

static void
note_absent(Oid dboid)
{
	KnownDb    *k;
	bool		found;

	if (!OidIsValid(dboid))
		return;
	k = hash_search(known, &dboid, HASH_ENTER, &found);
	if (!found)
		k->warned = false;
	k->absent = true;
	k->seen = true;
}

/*
 * Notice workers that stopped.  A worker of "*" that found no extension
 * gives its slot back and its database is remembered as such; any other
 * one is started again after WA_RESTART_DELAY_MS.
 */
static void
reap(TimestampTz now)
{
	for (int i = 0; i < wa_shared->nslots; i++)
	{
		WaDbSlot   *slot = &wa_shared->slots[i];
		LocalSlot  *l = &local[i];
		bool		left = false;
		bool		missing;
		Oid			dboid;
		pid_t		pid;

		if (!slot->in_use)
			continue;
		if (l->handle != NULL &&
			GetBackgroundWorkerPid(l->handle, &pid) == BGWH_STOPPED)
		{
			pfree(l->handle);
			l->handle = NULL;
			left = true;
		}
		if (l->adopted)
		{
			LWLockAcquire(wa_shared->lock, LW_SHARED);
			pid = slot->pid;
			LWLockRelease(wa_shared->lock);
			if (pid == 0 || kill(pid, 0) != 0)
			{
				l->adopted = false;
				left = true;
			}
		}
		if (!left)
			continue;
		l->signalled = 0;
		LWLockAcquire(wa_shared->lock, LW_SHARED);
		missing = slot->extension_missing;
		dboid = slot->dboid;
		LWLockRelease(wa_shared->lock);
		if (missing)
		{
			/*
			 * A CREATE EXTENSION that committed after the worker looked
			 * must not be missed: then the database is checked again.
			 */
			if (!l->announced)
				note_absent(dboid);
			free_slot(i);
			continue;
		}
		if (l->retiring)
		{
			free_slot(i);
			continue;
		}
		l->next_start = TimestampTzPlusMilliseconds(now, WA_RESTART_DELAY_MS);
	}
}

/* ----------
 * What to serve
 * ----------
 */

static bool
name_listed(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

/* whatsapp.database is a list: one slot per listed name. */
static void
plan_list(List *names)
{
	ListCell   *lc;
	int			refused = 0;

	for (int i = 0; i < wa_shared->nslots; i++)
	{
		WaDbSlot   *slot = &wa_shared->slots[i];
		DbEntry    *db;
		Oid			target;

		if (!slot->in_use)
			continue;
		if (!name_listed(names, slot->datname))
		{
			retire(i);
			continue;
		}
		local[i].retiring = false;
		db = db_by_name(slot->datname);
		target = db_connectable(db) ? db->oid : InvalidOid;
		if (!slot->listed || (!worker_alive(i) && slot->dboid != target))
		{
			LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
			slot->listed = true;
			if (!worker_alive(i))
				slot->dboid = target;
			LWLockRelease(wa_shared->lock);
		}
		/* dropped, renamed or replaced under the worker: it must go */
		if (worker_alive(i) && slot->dboid != target)
			stop_worker(i);
	}

	foreach(lc, names)
	{
		const char *name = (const char *) lfirst(lc);
		DbEntry    *db;
		bool		has = false;

		for (int i = 0; i < wa_shared->nslots && !has; i++)
			if (wa_shared->slots[i].in_use &&
				strcmp(wa_shared->slots[i].datname, name) == 0)
				has = true;
		if (has)
			continue;
		db = db_by_name(name);
		if (take_free_slot(name, db_connectable(db) ? db->oid : InvalidOid, true) < 0)
			refused++;
	}
	if (refused > 0 && !warned_list_long)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("whatsapp.database lists %d databases, but only %d can be served on this server",
						list_length(names), wa_shared->nslots - 1),
				 errdetail("%d of them are not served: each served database needs one background worker, and one more runs the launcher.",
						   refused),
				 errhint("Raise max_worker_processes (it takes a server restart), or list fewer databases.")));
	warned_list_long = refused > 0;
}

/* whatsapp.database = '*': every database with the extension installed. */
static void
plan_all(void)
{
	HASH_SEQ_STATUS hs;
	KnownDb    *k;
	int			checking = 0;

	/* the slots: a database dropped, made a template or closed goes */
	for (int i = 0; i < wa_shared->nslots; i++)
	{
		WaDbSlot   *slot = &wa_shared->slots[i];
		DbEntry    *db;

		if (!slot->in_use)
			continue;
		db = OidIsValid(slot->dboid) ? db_by_oid(slot->dboid) : NULL;
		if (!db_served_by_all(db))
		{
			retire(i);
			continue;
		}
		local[i].retiring = false;
		if (slot->listed || strcmp(slot->datname, NameStr(db->name)) != 0)
		{
			LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
			slot->listed = false;
			strlcpy(slot->datname, NameStr(db->name), NAMEDATALEN);
			LWLockRelease(wa_shared->lock);
		}
		if (!slot->confirmed)
			checking++;
	}

	/* forget what is known of databases gone, closed or made templates */
	hash_seq_init(&hs, known);
	while ((k = hash_seq_search(&hs)) != NULL)
		k->seen = false;
	for (int d = 0; d < ndbs; d++)
	{
		bool		found;

		if (!db_served_by_all(&dbs[d]))
			continue;
		k = hash_search(known, &dbs[d].oid, HASH_FIND, &found);
		if (found)
			k->seen = true;
	}
	hash_seq_init(&hs, known);
	while ((k = hash_seq_search(&hs)) != NULL)
		if (!k->seen)
			(void) hash_search(known, &k->oid, HASH_REMOVE, NULL);

	/* databases without a slot: check them, a few at a time */
	for (int d = 0; d < ndbs; d++)
	{
		DbEntry    *db = &dbs[d];
		bool		found;
		int			i;

		if (!db_served_by_all(db) || wa_slot_for_database(db->oid) != NULL)
			continue;
		k = hash_search(known, &db->oid, HASH_FIND, &found);
		if (found && k->absent)
			continue;
		if (checking >= WA_MAX_CHECKS)
			break;
		i = take_free_slot(NameStr(db->name), db->oid, false);
		if (i >= 0)
		{
			checking++;
			if (found)
				k->warned = false;
			continue;
		}
		if (!found)
		{
			k = hash_search(known, &db->oid, HASH_ENTER, NULL);
			k->absent = false;
			k->warned = false;
			k->seen = true;
		}
		if (!k->warned)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("whatsapp cannot serve database \"%s\": all %d worker slots are taken",
							NameStr(db->name), wa_shared->nslots),
					 errdetail("With whatsapp.database = '*', each database with the extension needs one background worker."),
					 errhint("Raise max_worker_processes (it takes a server restart). The database is served once a slot is free.")));
		k->warned = true;
	}
}

/* Something was announced: look again at those databases. */
static void
take_announcements(void)
{
	Oid			oids[WA_MAX_ANNOUNCED];
	bool		overflow;
	int			n = wa_take_announced(oids, WA_MAX_ANNOUNCED, &overflow);

	for (int i = 0; i < n; i++)
	{
		(void) hash_search(known, &oids[i], HASH_REMOVE, NULL);
		for (int j = 0; j < wa_shared->nslots; j++)
			if (wa_shared->slots[j].in_use && wa_shared->slots[j].dboid == oids[i])
				local[j].announced = true;
	}
	if (overflow)
	{
		HASH_SEQ_STATUS hs;
		KnownDb    *k;

		hash_seq_init(&hs, known);
		while ((k = hash_seq_search(&hs)) != NULL)
			(void) hash_search(known, &k->oid, HASH_REMOVE, NULL);
		for (int j = 0; j < wa_shared->nslots; j++)
			local[j].announced = true;
	}
}

/* ----------
 * Starting workers
 * ----------
 */

static bool
register_worker(int i, BackgroundWorkerHandle **handle)
{
	WaDbSlot   *slot = &wa_shared->slots[i];
	BackgroundWorker worker;
	MemoryContext old;
	bool		ok;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "whatsapp");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "wa_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "whatsapp worker for database %s",
			 slot->datname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "whatsapp worker");
	worker.bgw_main_arg = Int32GetDatum(i);
	/* the worker checks that the slot is still the one it was started for */
	memcpy(worker.bgw_extra, &slot->generation, sizeof(uint32));
	worker.bgw_notify_pid = MyProcPid;

	old = MemoryContextSwitchTo(TopMemoryContext);
	ok = RegisterDynamicBackgroundWorker(&worker, handle);
	MemoryContextSwitchTo(old);
	return ok;
}

/* Count the workers running now, for the log line of a refusal. */
static int
workers_running(void)
{
	int			n = 0;

	for (int i = 0; i < wa_shared->nslots; i++)
		if (wa_shared->slots[i].in_use && worker_alive(i))
			n++;
	return n;
}

/* Start the workers that are due; returns the milliseconds to sleep. */
static long
start_due(TimestampTz now, long sleep_ms)
{
	for (int i = 0; i < wa_shared->nslots; i++)
	{
		WaDbSlot   *slot = &wa_shared->slots[i];
		LocalSlot  *l = &local[i];

		if (!slot->in_use || l->retiring || worker_alive(i))
			continue;
		if (now < l->next_start)
		{
			sleep_ms = Min(sleep_ms, (l->next_start - now) / 1000 + 1);
			continue;
		}
		if (!OidIsValid(slot->dboid))
		{
			/* listed, missing (or closed to connections) */
			DbEntry    *db = db_by_name(slot->datname);

			if (!l->warned_missing)
			{
				if (db == NULL)
					ereport(WARNING,
							(errcode(ERRCODE_UNDEFINED_DATABASE),
							 errmsg("database \"%s\" listed in whatsapp.database does not exist",
									slot->datname),
							 errhint("Create the database, or remove it from whatsapp.database and reload the configuration.")));
				else
					ereport(WARNING,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("database \"%s\" listed in whatsapp.database does not allow connections",
									slot->datname),
							 errhint("Allow connections with ALTER DATABASE ... ALLOW_CONNECTIONS true, or remove it from whatsapp.database.")));
			}
			l->warned_missing = true;
			set_slot_state(i, db == NULL ? "idle: database does not exist"
						   : "idle: database does not allow connections");
			l->next_start = TimestampTzPlusMilliseconds(now, WA_MISSING_DB_RETRY_MS);
			continue;
		}
		l->warned_missing = false;
		if (wa_database_held(slot->dboid, now))
		{
			/* DROP DATABASE or the like runs: stay away */
			set_slot_state(i, "idle: a database command needs the database alone");
			sleep_ms = Min(sleep_ms, 500);
			continue;
		}
		l->announced = false;
		if (register_worker(i, &l->handle))
		{
			l->warned_refused = false;
			l->signalled = 0;
			continue;
		}
		l->handle = NULL;
		if (!l->warned_refused)
		{
			if (slot->listed || slot->confirmed)
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("could not start the whatsapp worker for database \"%s\": no background worker slot is free",
								slot->datname),
						 errdetail("%d whatsapp workers run; max_worker_processes is %d, shared with the launcher, parallel queries, logical replication and other extensions.",
								   workers_running(), max_worker_processes),
						 errhint("Raise max_worker_processes (it takes a server restart). The launcher tries again every %d s.",
								 WA_RESTART_DELAY_MS / 1000)));
			else
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("could not look for the whatsapp extension in database \"%s\": no background worker slot is free",
								slot->datname),
						 errdetail("%d whatsapp workers run; max_worker_processes is %d, shared with the launcher, parallel queries, logical replication and other extensions.",
								   workers_running(), max_worker_processes),
						 errhint("Raise max_worker_processes (it takes a server restart). The launcher tries again every %d s.",
								 WA_RESTART_DELAY_MS / 1000)));
		}
		l->warned_refused = true;
		set_slot_state(i, "waiting for a background worker slot");
		l->next_start = TimestampTzPlusMilliseconds(now, WA_RESTART_DELAY_MS);
		sleep_ms = Min(sleep_ms, WA_RESTART_DELAY_MS);
	}
	return sleep_ms;
}

/* ----------
 * The loop
 * ----------
 */

static void
launcher_exit(int code, Datum arg)
{
	SpinLockAcquire(&wa_shared->announce_mutex);
	if (wa_shared->launcher_latch == MyLatch)
		wa_shared->launcher_latch = NULL;
	SpinLockRelease(&wa_shared->announce_mutex);
}

/* Log what whatsapp.database now asks for, once per change. */
static void
log_setting(bool all, List *names)
{
	if (all)
	{
		if (!logged_all)
			ereport(LOG,
					(errmsg("whatsapp launcher serves every database in which the extension is installed")));
		logged_all = true;
		logged_empty = false;
		return;
	}
	logged_all = false;
	if (names == NIL)
	{
		if (!logged_empty)
			ereport(LOG,
					(errmsg("whatsapp.database is empty: no database is served"),
					 errhint("Set whatsapp.database to the databases whose messages should be delivered, or to '*', then reload the configuration.")));
		logged_empty = true;
	}
	else
		logged_empty = false;
}

void
wa_launcher_main(Datum main_arg)
{
	HASHCTL		ctl;
	TimestampTz now;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (wa_shared == NULL)
		proc_exit(0);

	/* Shared catalogs only: enough to read pg_database. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("whatsapp launcher");

	local = MemoryContextAllocZero(TopMemoryContext,
								   sizeof(LocalSlot) * wa_shared->nslots);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(KnownDb);
	known = hash_create("whatsapp launcher databases", 64, &ctl,
						HASH_ELEM | HASH_BLOBS);
	pass_context = AllocSetContextCreate(TopMemoryContext, "whatsapp launcher pass",
										 ALLOCSET_DEFAULT_SIZES);

	/* Workers of a predecessor: watch them, start none beside them. */
	now = GetCurrentTimestamp();
	LWLockAcquire(wa_shared->lock, LW_SHARED);
	for (int i = 0; i < wa_shared->nslots; i++)
	{
		WaDbSlot   *slot = &wa_shared->slots[i];

		if (slot->in_use && slot->pid != 0 && kill(slot->pid, 0) == 0)
			local[i].adopted = true;
	}
	LWLockRelease(wa_shared->lock);

	/* The doorbell. */
	SpinLockAcquire(&wa_shared->announce_mutex);
	wa_shared->launcher_latch = MyLatch;
	SpinLockRelease(&wa_shared->announce_mutex);
	before_shmem_exit(launcher_exit, (Datum) 0);

	for (;;)
	{
		bool		all;
		List	   *names = NIL;
		long		sleep_ms;

		MemoryContextReset(pass_context);
		MemoryContextSwitchTo(pass_context);
		now = GetCurrentTimestamp();

		all = wa_serve_all();
		if (!all)
			names = wa_database_names(wa_database);
		log_setting(all, names);

		take_announcements();
		scan_databases();
		reap(now);
		if (all)
			plan_all();
		else
			plan_list(names);
		sleep_ms = start_due(now, all ? WA_SCAN_INTERVAL_MS : WA_MISSING_DB_RETRY_MS);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(sleep_ms, 10), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			warned_list_long = false;
		}
	}
}
