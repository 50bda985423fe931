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

/* The NOTIFY drain: "flush" matters only to backends with a client. */
#define WA_PROCESS_NOTIFY_INTERRUPT() ProcessNotifyInterrupt(false)

/* Does roleid own the database?  16 folded the per-class checks into one. */
#if PG_VERSION_NUM >= 160000
#define WA_DATABASE_OWNERCHECK(dboid, roleid) \
	object_ownercheck(DatabaseRelationId, (dboid), (roleid))
#else
#define WA_DATABASE_OWNERCHECK(dboid, roleid) \
	pg_database_ownercheck((dboid), (roleid))
#endif

#endif							/* WHATSAPP_COMPAT_H */
