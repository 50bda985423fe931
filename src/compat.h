/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Everything that differs between the PostgreSQL major versions the
 *	  whatsapp extension supports (15 and newer) lives here.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WHATSAPP_COMPAT_H
#define WHATSAPP_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 150000
#error "whatsapp requires PostgreSQL 15 or newer"
#endif

/* fmgr.h declares _PG_init only from PostgreSQL 16 on. */
#if PG_VERSION_NUM < 160000
extern PGDLLEXPORT void _PG_init(void);
#endif

/*
 * From 16 on, the varlena macros (VARSIZE_ANY_EXHDR and friends) live in
 * varatt.h, which postgres.h no longer includes.
 */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/* The NOTIFY drain: "flush" matters only to backends with a client. */
#define WA_PROCESS_NOTIFY_INTERRUPT() ProcessNotifyInterrupt(false)

/*
 * A JSON lexer over a counted string, allocated in the current memory
 * context.  From 17 on, makeJsonLexContextCstringLen takes the context to
 * fill first; NULL has it allocated, as before.
 */
#if PG_VERSION_NUM >= 170000
#define WA_MAKE_JSON_LEX(json, len, encoding, need_escapes) \
	makeJsonLexContextCstringLen(NULL, (json), (len), (encoding), (need_escapes))
#else
#define WA_MAKE_JSON_LEX(json, len, encoding, need_escapes) \
	makeJsonLexContextCstringLen((json), (len), (encoding), (need_escapes))
#endif

/*
 * A wait event set that lives as long as the process.  Up to 16 the caller
 * names its memory context; from 17 on it always lives in TopMemoryContext
 * and the first argument is a resource owner, which a set never freed
 * before exit does not need.
 */
#if PG_VERSION_NUM >= 170000
#define WA_CREATE_PROCESS_WAIT_EVENT_SET(nevents) \
	CreateWaitEventSet(NULL, (nevents))
#else
#define WA_CREATE_PROCESS_WAIT_EVENT_SET(nevents) \
	CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/* Does roleid own the database?  16 folded the per-class checks into one. */
#if PG_VERSION_NUM >= 160000
#define WA_DATABASE_OWNERCHECK(dboid, roleid) \
	object_ownercheck(DatabaseRelationId, (dboid), (roleid))
#else
#define WA_DATABASE_OWNERCHECK(dboid, roleid) \
	pg_database_ownercheck((dboid), (roleid))
#endif

#endif							/* WHATSAPP_COMPAT_H */
