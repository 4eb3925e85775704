import { migrate } from '../db/migrate.js';
import { createLogger } from '../log.js';
import { databaseUrlFrom, parse, schemaFrom } from './args.js';

export const MIGRATE_HELP = `outbox-relay migrate [--database-url URL] [--schema NAME]

Applies pending migrations (forward-only; safe to run concurrently).`;

export async function migrateCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {});
  if (values.help) {
    console.log(MIGRATE_HELP);
    return 0;
  }
  const logger = createLogger();
  const result = await migrate({ db: databaseUrlFrom(values), schema: schemaFrom(values), logger });
  console.log(result.applied.length === 0 ? 'schema is up to date' : `applied: ${result.applied.join(', ')}`);
  return 0;
}
