--
-- phone: whatsapp.normalize_phone() and the E.164 rules of src/phone.c
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS whatsapp CASCADE;
RESET client_min_messages;
-- One row per case: the country meant, the input, the country_code
-- argument and the expected result (NULL: cannot be normalized).  The
-- inputs are ASCII; {nbsp}, {ndash} and {lrm} stand for U+00A0, U+2013 and
-- U+200E and are replaced just before the call, so the output stays ASCII.
CREATE TEMP TABLE phone_cases (
	id serial PRIMARY KEY,
	country text NOT NULL,
	input text NOT NULL,
	country_code text,
	expected text
);
INSERT INTO phone_cases (country, input, country_code, expected) VALUES
	('MX', '+52 55 1234-5678', NULL, '+525512345678'),
	('MX', '+52 (55) 1234-5678', NULL, '+525512345678'),
	('MX', '(55) 1234 5678', '52', '+525512345678'),
	('MX', '55.1234.5678', '+52', '+525512345678'),
	('MX', '+52 1 55 1234 5678', NULL, '+525512345678'),
	('MX', '5215512345678', '52', '+525512345678'),
	('MX', '525512345678', '52', '+525512345678'),
	('MX', '044 55 1234 5678', '52', '+525512345678'),
	('MX', '045 33 1234 5678', '52', '+523312345678'),
	('MX', '01 81 1234 5678', '52', '+528112345678'),
	('MX', '0052 55 1234 5678', NULL, '+525512345678'),
	('MX', '(+52) 55 1234 5678', NULL, '+525512345678'),
	('MX', '+52 55 1234 567', NULL, NULL),
	('MX', '+52 05 1234 5678', NULL, NULL),
	('BR', '+55 11 91234-5678', NULL, '+5511912345678'),
	('BR', '+55 11 8123-4567', NULL, '+551181234567'),
	('BR', '(11) 91234-5678', '55', '+5511912345678'),
	('BR', '(21) 2345-6789', '55', '+552123456789'),
	('BR', '011 91234-5678', '55', '+5511912345678'),
	('BR', '0 21 11 91234-5678', '55', '+5511912345678'),
	('BR', '0 15 21 2345-6789', '55', '+552123456789'),
	('BR', '5511912345678', '55', '+5511912345678'),
	('BR', '0055 11 91234 5678', NULL, '+5511912345678'),
	('BR', '0055 11 91234 5678', '55', NULL),
	('BR', '+55 11 81234-5678', NULL, NULL),
	('BR', '+55 01 91234-5678', NULL, NULL),
	('AR', '+54 9 11 2345-6789', NULL, '+5491123456789'),
	('AR', '011 15 2345-6789', '54', '+5491123456789'),
	('AR', '0351 15 234-5678', '54', '+5493512345678'),
	('AR', '02966 15 23-4567', '54', '+5492966234567'),
	('AR', '11 15 2345-6789', '54', '+5491123456789'),
	('AR', '+54 11 2345-6789', NULL, '+541123456789'),
	('AR', '(011) 4321-5678', '54', '+541143215678'),
	('AR', '+54 11 15 2345-6789', NULL, '+5491123456789'),
	('AR', '5491123456789', '54', '+5491123456789'),
	('AR', '+54 9 51 2345-6789', NULL, NULL),
	('CO', '+57 300 123 4567', NULL, '+573001234567'),
	('CO', '300 123 4567', '57', '+573001234567'),
	('CO', '(601) 234 5678', '57', '+576012345678'),
	('CO', '573001234567', '57', '+573001234567'),
	('CO', '+57 1 234 5678', NULL, NULL),
	('CO', '0057 300 123 4567', '57', NULL),
	('CL', '+56 9 8765 4321', NULL, '+56987654321'),
	('CL', '9 8765 4321', '56', '+56987654321'),
	('CL', '(2) 2345 6789', '56', '+56223456789'),
	('CL', '09 8765 4321', '56', '+56987654321'),
	('CL', '+56 9 8765 432', NULL, NULL),
	('ES', '612 34 56 78', '34', '+34612345678'),
	('ES', '+34 912 345 678', NULL, '+34912345678'),
	('ES', '0034 612 34 56 78', NULL, '+34612345678'),
	('ES', '34612345678', '34', '+34612345678'),
	('ES', '512 34 56 78', '34', NULL),
	('IT', '06 1234 5678', '39', '+390612345678'),
	('IT', '+39 06 1234 5678', NULL, '+390612345678'),
	('IT', '0039 02 1234 5678', NULL, '+390212345678'),
	('IT', '+39 (0)6 1234 5678', NULL, '+390612345678'),
	('IT', '333 123 4567', '39', '+393331234567'),
	('IT', '+39 6 1234 5678', NULL, NULL),
	('DE', '030 1234567', '49', '+49301234567'),
	('DE', '030/123 45 67', '49', '+49301234567'),
	('DE', '0151 23456789', '49', '+4915123456789'),
	('DE', '+49 (0)30 1234567', NULL, '+49301234567'),
	('DE', '+49 030 1234567', NULL, '+49301234567'),
	('DE', '0049 30 1234567', NULL, '+49301234567'),
	('US', '+1 (415) 555-2671', NULL, '+14155552671'),
	('US', '(415) 555-2671', '1', '+14155552671'),
	('US', '1-415-555-2671', '1', '+14155552671'),
	('US', '415.555.2671', '+1', '+14155552671'),
	('US', '011 52 55 1234 5678', '1', '+525512345678'),
	('US', '(415) 155-2671', '1', NULL),
	('US', '1 (631) 555-1234', '91', NULL),
	('PE', '987 654 321', '51', '+51987654321'),
	('PE', '(01) 234 5678', '51', '+5112345678'),
	('GB', '+44 (0)20 7946 0958', NULL, '+442079460958'),
	('GB', '020 7946 0958', '44', '+442079460958'),
	('FR', '06 12 34 56 78', '33', '+33612345678'),
	('RU', '8 (916) 123-45-67', '7', '+79161234567'),
	('HU', '06 30 123 4567', '36', '+36301234567'),
	('IN', '+91 98765 43210', NULL, '+919876543210'),
	('MX', '{nbsp}+52{nbsp}55{nbsp}1234{nbsp}5678', NULL, '+525512345678'),
	('MX', '55{ndash}1234{ndash}5678', '52', '+525512345678'),
	('ES', '{lrm}+34 612 34 56 78{lrm}', NULL, '+34612345678'),
	('-', '+52 55 1234 5678 ext. 12', NULL, NULL),
	('-', '+52 55 1234 5678 x12', NULL, NULL),
	('-', '+52 55 1234 5678 #12', NULL, NULL),
	('-', '55 1234 5678', NULL, NULL),
	('-', '', '52', NULL),
	('-', '+', NULL, NULL),
	('-', '+ ( ) -', NULL, NULL),
	('-', '. - /', '52', NULL),
	('-', 'abc', '52', NULL),
	('-', '55 1234 abcd', '52', NULL),
	('-', '52+55 1234 5678', NULL, NULL),
	('-', '++52 55 1234 5678', NULL, NULL),
	('-', '+52 55 1234 5678 / +52 55 8765 4321', NULL, NULL),
	('-', '+52 (55 1234 5678', NULL, NULL),
	('-', '1234567', NULL, NULL),
	('-', '+1234567', NULL, NULL),
	('-', '+52 55 1234 5678 9012 3', NULL, NULL),
	('-', '+282 1234 5678', NULL, NULL),
	('-', '+800 1234 5678', NULL, NULL),
	('-', '+0 55 1234 5678', NULL, NULL),
	('-', '00 55 1234 5678 1234 56', NULL, NULL),
	('-', '+212 6123 4567', NULL, NULL);
CREATE TEMP VIEW phone_results AS
SELECT id, country, input, country_code, expected,
	   whatsapp.normalize_phone(
		   replace(replace(replace(input,
				   '{nbsp}', E'\xC2\xA0'),
				   '{ndash}', E'\xE2\x80\x93'),
				   '{lrm}', E'\xE2\x80\x8E'),
		   country_code) AS actual
  FROM phone_cases;
SELECT id, country, quote_literal(input) AS input, country_code AS cc,
	   coalesce(expected, 'NULL') AS expected,
	   coalesce(actual, 'NULL') AS actual,
	   CASE WHEN actual IS NOT DISTINCT FROM expected THEN 'ok' ELSE 'MISMATCH' END AS result
  FROM phone_results
 ORDER BY id;
-- Must be 0.
SELECT count(*) AS mismatches
  FROM phone_results
 WHERE actual IS DISTINCT FROM expected;
-- NULL phone: NULL, whatever the country code.
SELECT whatsapp.normalize_phone(NULL) IS NULL AS null_phone,
	   whatsapp.normalize_phone(NULL, '52') IS NULL AS null_phone_with_cc;
-- A NULL country_code means whatsapp.default_country_code; empty by
-- default, so a national number is refused.
SELECT whatsapp.normalize_phone('300 123 4567') IS NULL AS no_default;
SET whatsapp.default_country_code = '57';
SELECT whatsapp.normalize_phone('300 123 4567') AS from_setting,
	   whatsapp.normalize_phone('300 123 4567', NULL) AS null_argument,
	   whatsapp.normalize_phone('55 1234 5678', '52') AS argument_wins,
	   whatsapp.normalize_phone('+34 612 34 56 78') AS international;
SET whatsapp.default_country_code = '+52';
SELECT whatsapp.normalize_phone('55 1234 5678') AS plus_in_setting;
RESET whatsapp.default_country_code;
SELECT whatsapp.normalize_phone('300 123 4567') IS NULL AS after_reset;
-- A country_code argument is checked even when the number does not need it.
SELECT whatsapp.normalize_phone('55 1234 5678', '5a');
SELECT whatsapp.normalize_phone('+52 55 1234 5678', 'MX');
SELECT whatsapp.normalize_phone('55 1234 5678', '1234');
SELECT whatsapp.normalize_phone('55 1234 5678', '');
SELECT whatsapp.normalize_phone('55 1234 5678', '+');
SELECT whatsapp.normalize_phone('55 1234 5678', '28');
-- Inputs over 256 bytes are not read.
SELECT whatsapp.normalize_phone(repeat(' ', 300) || '+52 55 1234 5678') IS NULL AS long_input;
-- In a database that is not UTF-8, any non-ASCII character makes a number
-- invalid; only UTF-8 spaces and dashes are separators (found by test/fuzz:
-- in LATIN1, 'Â' and a no-break space, the bytes of a UTF-8 no-break space,
-- passed as one).
\set regress_db :DBNAME
CREATE DATABASE wa_phone_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c wa_phone_latin1
SET client_min_messages = warning;
CREATE EXTENSION whatsapp CASCADE;
SELECT whatsapp.normalize_phone('+52 55 1234 5678') AS ascii,
	   whatsapp.normalize_phone(E'+52\u00c2\u00a055 1234 5678') AS utf8_nbsp_bytes,
	   whatsapp.normalize_phone(E'+52\u00a055 1234 5678') AS latin1_nbsp,
	   whatsapp.normalize_phone(E'+52 55 1234 5678\u00e9') AS letter;
\c :regress_db
DROP DATABASE wa_phone_latin1;
