/*-------------------------------------------------------------------------
 *
 * jsonb_access.c
 *	  Defensive access to jsonb that came from outside: Meta's answers to
 *	  the worker's requests and the webhook payloads.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "jsonb_access.h"

#include "utils/builtins.h"
#include "utils/numeric.h"

/*
 * Every helper accepts NULL and a container of the wrong
 * kind, and answers NULL: the payload is never trusted to have a shape.
 */
JsonbValue *
wa_json_member(JsonbContainer *c, const char *key)
{
	if (c == NULL || !JsonContainerIsObject(c))
		return NULL;
	return getKeyJsonValueFromContainer(c, key, strlen(key), NULL);
}

JsonbContainer *
wa_json_container(JsonbValue *v, bool want_object)
{
	if (v == NULL || v->type != jbvBinary)
		return NULL;
	if (want_object ? !JsonContainerIsObject(v->val.binary.data) :
		!JsonContainerIsArray(v->val.binary.data))
		return NULL;
	return v->val.binary.data;
}

JsonbContainer *
wa_json_object(JsonbContainer *c, const char *key)
{
	return wa_json_container(wa_json_member(c, key), true);
}

JsonbContainer *
wa_json_array(JsonbContainer *c, const char *key)
{
	return wa_json_container(wa_json_member(c, key), false);
}

/* A string member, or a number written as text; NULL otherwise. */
char *
wa_json_string(JsonbContainer *c, const char *key)
{
	JsonbValue *v = wa_json_member(c, key);

	if (v == NULL)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out,
												   NumericGetDatum(v->val.numeric)));
	return NULL;
}

/* An integer member (number or digits in a string) within int32. */
bool
wa_json_int(JsonbContainer *c, const char *key, int32 *out)
{
	char	   *s = wa_json_string(c, key);
	char	   *end;
	long		l;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	l = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || l < PG_INT32_MIN || l > PG_INT32_MAX)
		return false;
	*out = (int32) l;
	return true;
}
