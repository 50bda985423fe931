/*-------------------------------------------------------------------------
 *
 * jsonb_access.h
 *	  Defensive access to jsonb from outside (jsonb_access.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WHATSAPP_JSONB_ACCESS_H
#define WHATSAPP_JSONB_ACCESS_H

#include "utils/jsonb.h"

extern JsonbValue *wa_json_member(JsonbContainer *c, const char *key);
extern JsonbContainer *wa_json_container(JsonbValue *v, bool want_object);
extern JsonbContainer *wa_json_object(JsonbContainer *c, const char *key);
extern JsonbContainer *wa_json_array(JsonbContainer *c, const char *key);
extern char *wa_json_string(JsonbContainer *c, const char *key);
extern bool wa_json_int(JsonbContainer *c, const char *key, int32 *out);

#endif							/* WHATSAPP_JSONB_ACCESS_H */
