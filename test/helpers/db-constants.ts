export const TEMPLATE_DB = 'keyplane_template';
