import { DEFAULT_PARTITIONS_AHEAD, migrate, PARTITION_UNITS, type PartitionUnit } from '../db/migrate.js';
import { createLogger } from '../log.js';
import { bad, databaseUrlFrom, integerFlag, parse, schemaFrom, helpAsked } from './args.js';

export const MIGRATE_HELP = `outbox-relay migrate [--database-url URL] [--schema NAME] [--partition-by day|week|month [--partitions-ahead N]]

Applies pending migrations (forward-only; safe to run concurrently).

  --partition-by UNIT     opt-in: partition the outbox table by created_at, one partition
                          per UNIT (the existing table becomes the first partition, nothing
                          is copied); expired partitions of sent rows are dropped whole by
                          the relay's retention. See the README, "Partitioned outbox".
  --partitions-ahead N    partitions made in advance beyond the current one (1-366,
                          default ${DEFAULT_PARTITIONS_AHEAD})`;

export async function migrateCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { 'partition-by': { type: 'string' }, 'partitions-ahead': { type: 'string' } });
  if (helpAsked(values, MIGRATE_HELP)) return 0;
  const unit = values['partition-by'] as string | undefined;
  if (unit !== undefined && !(PARTITION_UNITS as readonly string[]).includes(unit)) bad(`--partition-by must be one of ${PARTITION_UNITS.join(', ')}, got ${JSON.stringify(unit)}`);
  const ahead = integerFlag('partitions-ahead', values['partitions-ahead'] as string | undefined, { min: 1 });
  if (ahead !== undefined && unit === undefined) bad('--partitions-ahead needs --partition-by');
  if (ahead !== undefined && ahead > 366) bad(`--partitions-ahead must be <= 366, got ${ahead}`);
  const logger = createLogger();
  const result = await migrate({
    db: databaseUrlFrom(values),
    schema: schemaFrom(values),
    logger,
    ...(unit === undefined ? {} : { partitionBy: unit as PartitionUnit, partitionsAhead: ahead }),
  });
  console.log(result.applied.length === 0 ? 'schema is up to date' : `applied: ${result.applied.join(', ')}`);
  return 0;
}
