/*-------------------------------------------------------------------------
 *
 * whatsapp.h
 *	  Declarations shared by the whatsapp extension's C files: settings,
 *	  shared state and the entry points each file offers the others.
 *
 * Code that differs between PostgreSQL major versions belongs in
 * compat.h, which this header includes first.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WHATSAPP_H
#define WHATSAPP_H

#include "compat.h"

#include "access/attnum.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"

#ifndef WHATSAPP_VERSION
#error "WHATSAPP_VERSION must be defined by the Makefile"
#endif

/* ----------
 * Settings (whatsapp.c).  Names match the GUCs without the prefix.
 * ----------
 */
extern char *wa_database;			/* sighup: comma-separated list, or "*" */
extern char *wa_api_url;			/* sighup, superuser only */
extern char *wa_api_version;		/* sighup, superuser only */
extern char *wa_odoo_data_dir;		/* sighup, superuser only */
extern char *wa_key_file;			/* sighup, superuser only */
extern char *wa_proxy;				/* sighup, superuser only */
extern char *wa_ca_file;			/* sighup, superuser only */
extern int	wa_max_inflight;		/* sighup */
extern int	wa_http_timeout;		/* sighup, milliseconds */
extern int	wa_max_attempts;		/* sighup */
extern int	wa_in_doubt;			/* sighup, WA_IN_DOUBT_* */
extern int	wa_log_retention;		/* sighup, minutes */
extern int	wa_content_retention;	/* sighup, minutes */
extern int	wa_poll_interval;		/* sighup, milliseconds */
extern int	wa_shutdown_timeout;	/* sighup, milliseconds */
extern int	wa_batch_size;			/* sighup */
extern int	wa_test_fail_start;		/* sighup, superuser only; tests only */
extern char *wa_default_country_code;	/* user */
extern int	wa_window_check;		/* user, WA_WINDOW_* */
extern bool wa_odoo_events;			/* user */
extern int	wa_odoo_max_age;		/* user, minutes */

#define WA_IN_DOUBT_RETRY	0
#define WA_IN_DOUBT_FAIL	1

#define WA_WINDOW_OFF		0
#define WA_WINDOW_WARN		1
#define WA_WINDOW_BLOCK		2

/* True when the library was loaded through shared_preload_libraries. */
extern bool wa_preloaded;

/* ----------
 * Shared state (shared.c).  One slot per database that a worker serves or
 * checks, max_worker_processes of them (a database needs a worker, and
 * there can be no more workers than that).  Only atomics, pids, latches
 * and counters live here, never a pointer into a process's own memory.
 *
 * The launcher alone takes and gives back slots; it sets in_use, listed,
 * generation, datname and dboid while no worker runs in the slot.  The
 * worker sets pid, latch, confirmed, extension_missing and the figures.
 * ----------
 */
typedef struct WaDbSlot
{
	bool		in_use;			/* taken by the launcher for a database */
	bool		listed;			/* named in whatsapp.database */
	bool		confirmed;		/* its worker found the extension installed */
	bool		extension_missing;	/* whatsapp.database = '*': its worker
									 * found no extension and left */
	uint32		generation;		/* bumped each time the slot is taken */
	char		datname[NAMEDATALEN];
	Oid			dboid;			/* InvalidOid while a listed one is missing */
	pid_t		pid;			/* 0 while no worker runs */
	Latch	   *latch;			/* the worker's latch, or NULL */
	pg_atomic_uint32 wake_pending;	/* 1 after a wake, until the worker reads it */
	pg_atomic_uint32 pdf_wait_pending;	/* 1 after a commit added an Odoo PDF
										 * wait, until the worker reads it */
	pg_atomic_uint32 accounts_generation;	/* bumped at commit of account changes */
	pg_atomic_uint64 sent_total;	/* requests answered with HTTP 200 */
	pg_atomic_uint32 inflight;	/* requests now in flight */
	pg_atomic_uint64 queue_depth;	/* queued messages at the last poll */
	TimestampTz oldest_queued;	/* created_at of the oldest queued, or 0 */
	TimestampTz started_at;
	pg_atomic_uint64 sent_last_minute;	/* published by the worker */
	char		state[64];		/* "delivering", "idle: ..." */
	char		last_error[256];
#ifdef WA_TRACE_TIMING
	TimestampTz trace_rung_at;	/* last wake rung at a commit (worker.c) */
#endif
} WaDbSlot;

/*
 * A database that a command such as DROP DATABASE needs without other
 * sessions (dbcommands.c): no worker starts for it while the backend "pid"
 * runs the command, nor before "until".
 */
typedef struct WaHold
{
	Oid			dboid;			/* InvalidOid: the entry is free */
	pid_t		pid;			/* the backend running the command, or 0 */
	TimestampTz until;			/* after the command: restart delay */
} WaHold;

#define WA_MAX_HOLDS		16
/* Milliseconds between a worker's stop and its next start. */
#define WA_RESTART_DELAY_MS	10000
/* Databases announced to the launcher and not read yet. */
#define WA_MAX_ANNOUNCED	32

typedef struct WaShared
{
	LWLock	   *lock;			/* protects slots' and holds' plain fields */
	WaHold		holds[WA_MAX_HOLDS];

	/*
	 * The launcher's doorbell, rung at the commit of CREATE EXTENSION,
	 * CREATE DATABASE and the like.  Rung from commit callbacks, which must
	 * not raise: so a spinlock, not the LWLock.
	 */
	slock_t		announce_mutex;
	Latch	   *launcher_latch;	/* NULL while no launcher runs */
	int			nannounced;
	bool		announce_overflow;	/* more than fit: check every database */
	Oid			announced[WA_MAX_ANNOUNCED];

	int			nslots;			/* max_worker_processes at server start */
	WaDbSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} WaShared;

extern WaShared *wa_shared;

extern void wa_shmem_request(void);
extern void wa_shmem_startup(void);
extern WaDbSlot *wa_slot_for_database(Oid dboid);

/* whatsapp.database: "*"?  Else the names it lists (a List of char *). */
extern bool wa_serve_all(void);
extern List *wa_database_names(const char *list);
extern bool wa_database_listed(const char *name);

/* Called by enqueue and account functions: wake the worker at commit. */
extern void wa_wake_worker_at_commit(void);
extern void wa_pdf_wait_at_commit(void);
extern void wa_accounts_changed_at_commit(void);
extern bool wa_worker_serves_current_database(void);
/* Ring the launcher's doorbell at commit, naming a database (or none). */
extern void wa_wake_launcher_at_commit(Oid dboid);
/* For the launcher: the databases announced since the last call. */
extern int	wa_take_announced(Oid *out, int max, bool *overflow);

/* Holds (dbcommands.c takes them, the launcher honours them). */
extern bool wa_hold_database(Oid dboid);
extern void wa_release_database(Oid dboid, int delay_ms);
extern bool wa_database_held(Oid dboid, TimestampTz now);

/* Make room for a command that needs a database without other sessions. */
extern void wa_install_dbcommand_hook(void);

/* ----------
 * Phone numbers (phone.c).
 * ----------
 */
#define WA_E164_MAXLEN 16		/* '+' and at most 15 digits */

/*
 * Normalize "input" to E.164 with a leading '+', writing at most
 * WA_E164_MAXLEN + 1 bytes into out.  default_cc is a country calling code
 * of digits only (may be NULL or empty).  Returns false, with out set to
 * "", when the number cannot be made E.164.  Never raises an error.
 */
extern bool wa_normalize_phone(const char *input, const char *default_cc,
							   char *out);

/*
 * A phone number as log lines and messages may show it: its last four
 * digits only, as "number ending in 0173" (palloc'd).
 */
extern char *wa_phone_for_log(const char *number);

/* ----------
 * Sealing (seal.c).  See seal.c for the format.
 * ----------
 */

/* Field names used in seal bindings and as column suffixes. */
#define WA_FIELD_TOKEN			"access_token"
#define WA_FIELD_APP_SECRET		"app_secret"
#define WA_FIELD_VERIFY_TOKEN	"verify_token"

/* Outcome of an unseal attempt that must not raise. */
typedef enum WaUnsealResult
{
	WA_UNSEAL_OK = 0,
	WA_UNSEAL_NO_KEY,			/* key file missing or unreadable */
	WA_UNSEAL_BAD_KEY_FILE,		/* wrong mode, malformed */
	WA_UNSEAL_WRONG_KEY,		/* no key in the file has this key id */
	WA_UNSEAL_BINDING,			/* ciphertext belongs to another row or db */
	WA_UNSEAL_CORRUPT,			/* decryption failed */
	WA_UNSEAL_NO_PGCRYPTO		/* pgcrypto is not installed in this db */
} WaUnsealResult;

/*
 * Seal "secret" for (account_id, field) under the current key, creating the
 * key file if the rules allow it.  Raises an ERROR on failure.  Returns the
 * ciphertext and sets *key_id to the key's fingerprint (palloc'd).
 */
extern bytea *wa_seal(int32 account_id, const char *field, const char *secret,
					  char **key_id);

/*
 * Unseal; never raises for key or binding problems (it returns the reason).
 * On success *secret is a palloc'd, NUL-terminated string that the caller
 * wipes with wa_wipe() when done.  With check_database false, a ciphertext
 * sealed in another database (a restore or copy) is accepted: wa_rebind()
 * uses that.
 */
extern WaUnsealResult wa_unseal(bytea *sealed, const char *key_id,
								int32 account_id, const char *field,
								bool check_database, char **secret);

/*
 * A result as one full sentence, for an errdetail or a paused_reason, and
 * a sentence saying what to do about it (NULL for WA_UNSEAL_OK).  Neither
 * ever contains a secret or key material.
 */
extern const char *wa_unseal_result_text(WaUnsealResult r);
extern const char *wa_unseal_result_hint(WaUnsealResult r);
extern void wa_wipe(char *secret);

/*
 * Subkeys for purposes other than sealing: HMAC-SHA256(key, label) for
 * every key of the key file, current key first (seal.c).
 */
#define WA_SUBKEY_BYTES		32
typedef struct WaSubkey
{
	uint8		raw[WA_SUBKEY_BYTES];
	char		id[17];			/* the key id of the key it comes from */
} WaSubkey;
extern int	wa_derive_subkeys(const char *label, bool create, WaSubkey **out);

/*
 * The keyed hashes of an identifier (subject.c): "erased:" key id ":" 64
 * hex digits, one per key of the key file (current first), in *out; returns
 * how many (0 without a usable key file).  Never raises for the key file.
 */
#define WA_SUBJECT_HASH_PREFIX	"erased:"
extern int	wa_subject_hashes(const char *identifier, char ***out);

/* One row of whatsapp.audit (audit.c), from C: function and target. */
extern void wa_audit(const char *function, const char *target);

/*
 * Decode 2 * nbytes hexadecimal digits (either case) into out; false when
 * one is not a hexadecimal digit.
 */
extern bool wa_hex_decode(const char *hex, int nbytes, uint8 *out);

/*
 * Write a new key file whose first key is new and which keeps every older
 * key, for wa_rotate_key().  Holds a cluster-wide lock until the end of
 * the transaction.  Returns the new key id (palloc'd).
 */
extern char *wa_rotate_key_file(void);

/* ----------
 * Log redaction (redact.c).
 * ----------
 */
extern void wa_redact_install_hooks(void);
extern void wa_report_redacted_activity(const char *funcname);

/* ----------
 * Message ownership (ownership.c).
 * ----------
 */

/*
 * The caller of a SECURITY INVOKER function that does its work with its
 * owner's rights, and what to restore.
 */
typedef struct WaActingAs
{
	Oid			caller;			/* GetUserId() on entry: the calling role */
	Oid			saved_user;
	int			saved_context;
} WaActingAs;

/* Take the rights of the function's owner; record the caller. */
extern void wa_act_as_owner(FunctionCallInfo fcinfo, WaActingAs *acting);

/* Give them back (also on the way out of a PG_TRY). */
extern void wa_act_as_caller_again(const WaActingAs *acting);

/*
 * May "caller" cancel or retry a message that queued_by (a role name, or
 * NULL for none recorded) queued?  Superusers and members of
 * whatsapp_admin may act on every message, other roles on those of the
 * roles whose privileges they have.
 */
extern bool wa_may_act_on(Oid caller, const char *queued_by);

/*
 * Does whatsapp.message have the queued_by column (version 0.3 on)?  A
 * library newer than the installed SQL objects runs until ALTER EXTENSION
 * UPDATE, and must not fail meanwhile.
 */
extern bool wa_message_has_queued_by(void);

/*
 * Does whatsapp.message have the phase column (0.3 on), which the partial
 * indexes on queued and sending messages name in their predicates?  A
 * statement that should use one of them names phase too, when it exists.
 */
extern bool wa_message_has_phase(void);

/* ----------
 * Keyword folding (keywords.c).
 * ----------
 */

/* A message's text folded for keyword matching (palloc'd). */
extern char *wa_fold_keyword(const char *s, int len);

/* ----------
 * The checks sending makes about a recipient (recipient.c).
 * ----------
 */

/*
 * The E.164 forms one number is known by (itself; Brazil's mobiles with and
 * without the ninth digit; Argentina's with and without the 9).  Writes at
 * most 4 forms and returns how many.
 */
extern int	wa_phone_forms(const char *e164, char forms[][WA_E164_MAXLEN + 1]);
extern bool wa_is_bsuid(const char *s);

/* What enqueue records instead of queuing, when anything. */
typedef struct WaRecipientVerdict
{
	const char *state;			/* NULL: queue it; "blocked" or "failed" */
	const char *failure_type;	/* "opted_out", "template" or "whatsapp_unrecoverable" */
	int32		error_code;		/* 131047 outside the window, else 0 */
	char	   *error_title;
} WaRecipientVerdict;

/*
 * The opt-out rule, the one copy of it: NULL, or why the identifier (E.164,
 * or the raw "+digits" of a wa_id that cannot be normalized) may not get a
 * message of this kind (and template, for kind "template").  snap NULL:
 * the running statement's snapshot.  Inside SPI.
 */
extern char *wa_opt_out_reason(int32 account_id, const char *identifier,
							   const char *kind, const char *template_name,
							   Snapshot snap);

/*
 * For enqueue, inside its SPI connection, for a recipient that is valid
 * E.164: opted out (wa_opt_out_reason)?  A template Meta paused or
 * disabled?  A free-form message outside the 24-hour window under
 * whatsapp.window_check (warns under "warn")?  payload is the message's
 * jsonb Datum.
 */
extern void wa_recipient_check(int32 account_id, const char *e164,
							   const char *kind, Datum payload,
							   WaRecipientVerdict *verdict);

/* A template Meta paused or disabled: true (and *verdict set: failed, template). */
extern bool wa_template_check(int32 account_id, Datum payload,
							  WaRecipientVerdict *verdict);

/* The opt-out rule for a message: true (and *verdict set: blocked) when opted out. */
extern bool wa_recipient_opted_out(int32 account_id, const char *identifier,
								   const char *kind, Datum payload,
								   WaRecipientVerdict *verdict);

/* ----------
 * Reading Odoo's tables without running their owner's code (odoo_read.c).
 * ----------
 */
/* public.relname when it is an ordinary table (locked); else InvalidOid. */
extern Oid	wa_odoo_table(const char *relname, int elevel);
extern AttrNumber wa_odoo_column(Oid relid, const char *colname,
								 const Oid *types, Oid *type, int elevel);
extern Oid	wa_key_index(Oid relid, AttrNumber att, Oid atttype, Oid *collation);
extern struct SysScanDescData *wa_key_scan(Relation rel, AttrNumber att,
										   Oid atttype, Oid index, Oid coll,
										   int64 ikey, const char *tkey,
										   Snapshot snap);
/* Is the number active on Odoo's phone_blacklist?  snap NULL: active one. */
extern bool wa_odoo_blacklisted(const char *number, Snapshot snap);
/* A value of Odoo's ir_config_parameter, or NULL. */
extern char *wa_odoo_config_param(const char *key);
/* Is text column att (0: none) of a tuple one of words (NULL-terminated)? */
extern bool wa_tuple_text_in(HeapTuple tup, TupleDesc desc, AttrNumber att,
							 const char *const *words);

/*
 * Acting as the owner of an Odoo table, for the one write the extension
 * makes there (odoo_read.c).  Ended by wa_odoo_as_owner_end, or by the
 * (sub)transaction's abort, which restores both.
 */
typedef struct WaOwnerContext
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} WaOwnerContext;

extern void wa_odoo_as_owner_begin(Oid relid, WaOwnerContext *ctx);
extern void wa_odoo_as_owner_end(WaOwnerContext *ctx);
extern char *wa_odoo_link_warning(const char *base_url, bool check_freeze);

/* ----------
 * The official PDF of an Odoo invoice (odoo_pdf.c).
 * ----------
 */
typedef struct WaOdooPdf
{
	bool		found;
	int64		id;				/* ir_attachment.id */
	char	   *name;
	char	   *token;			/* NULL: none yet */
	char	   *store_fname;	/* NULL: in the database */
	bytea	   *db_datas;		/* the file, when stored in the database */
	Oid			relid;			/* public.ir_attachment */
} WaOdooPdf;

/* The worker's upload of a file (worker.c): the media id, or NULL with *why. */
typedef char *(*WaMediaUploader) (int32 account_id, const char *filename, const char *mime,
								  const char *data, size_t len, char **why);

extern int	wa_odoo_version(void);
extern bool wa_odoo_invoice_pdf(int64 move_id, int version, const char *doc_name,
								Snapshot snap, bool with_data, WaOdooPdf *out);
extern char *wa_uuid4(void);
extern char *wa_odoo_attachment_token_problem(Oid relid);
extern bool wa_odoo_attachment_token_write(Oid relid, int64 att_id, const char *token);
extern char *wa_odoo_attachment_link(const char *base_url, int64 att_id, const char *token);
extern char *wa_odoo_pdf_filename(const char *att_name, const char *doc_name,
								  const char *table, int64 res_id);
extern void wa_odoo_header_json(StringInfo out, const char *link, const char *filename);
extern void wa_odoo_pdf_wait_record(int32 account_id, const char *dedupe_key, int64 res_id,
									TimestampTz until, const char *base_url,
									const char *doc_name, bool upload,
									const char *template_no_header);
extern Datum wa_odoo_payload_template(Datum payload, const char *template_name);
extern int	wa_odoo_pdf_release(WaMediaUploader upload);

/* ----------
 * Content retention (retention.c).
 * ----------
 */
/* Most rows per table that one turn of the purge changes. */
#define WA_CONTENT_PURGE_BATCH	500

/* One turn of the purge, inside SPI; true when more rows are due. */
extern bool wa_purge_content(void);

/* ----------
 * Statistics behind whatsapp.stats (stats.c).
 * ----------
 */
/* Are the 0.3 statistics objects installed? */
extern bool wa_stats_present(void);
/* Count a message recorded as failed or blocked at enqueue (inside SPI). */
extern void wa_stats_count_enqueue(int32 account_id, const char *state,
								   const char *failure_type);

/* ----------
 * Background worker (worker.c).
 * ----------
 */
extern void wa_register_workers(void);
extern PGDLLEXPORT void wa_worker_main(Datum main_arg);

#endif							/* WHATSAPP_H */
